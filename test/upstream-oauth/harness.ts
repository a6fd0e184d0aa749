/**
 * The upstream OAuth flow assembled the way app.ts assembles it — the real stores, discovery,
 * client registration, flows, routes, `oauth` credential source, gateway path and auth_required
 * renderer — in front of a real MCP server with its own real authorization server
 * (`test/support/upstream-as.ts`).
 *
 * Two stand-ins, for what issue 4 tests on its own: the agent's bearer token is
 * `gw-test.<sub>.<sid>` (instead of our signed JWT) and the browser's login cookie is
 * `test-login=<sub>.<sid>` (instead of our signed login cookie). Neither is the code under test.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { Pool } from 'undici';
import { sendErrorPage } from '../../src/authserver/login/html.ts';
import { createOAuthCredential } from '../../src/credentials/oauth.ts';
import type { Principal } from '../../src/credentials/types.ts';
import type { Authenticator } from '../../src/gateway/authenticate.ts';
import { createAuthRequiredRenderer, type ChallengeSetting } from '../../src/gateway/challenge.ts';
import { createClientCapabilities } from '../../src/gateway/client-capabilities.ts';
import { createMcpRoutes } from '../../src/gateway/mcp-route.ts';
import { createStreamRegistry } from '../../src/gateway/stream-registry.ts';
import type { Upstream } from '../../src/gateway/upstream.ts';
import { InvalidToken } from '../../src/http/errors.ts';
import { applyRouteLimits } from '../../src/http/route-limits.ts';
import { createFrontDoor } from '../../src/http/server.ts';
import { createGuardedFetch, type GuardedFetch } from '../../src/net/guarded-fetch.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createGatewayMetrics, createRegistry } from '../../src/observability/metrics.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/port.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createClientRegistration } from '../../src/upstream-oauth/client-registration.ts';
import { createDiscovery } from '../../src/upstream-oauth/discovery.ts';
import { createUpstreamFlows, type OAuthUpstream, type UpstreamFlows } from '../../src/upstream-oauth/flow.ts';
import { createUpstreamOAuthRoutes, type ConnectedEvent } from '../../src/upstream-oauth/routes.ts';
import { createUpstreamStores, type UpstreamStores } from '../../src/upstream-oauth/stores.ts';
import { freePort } from '../support/gateway.ts';
import { startUpstreamWithAs, type UpstreamRegistration, type UpstreamWithAs } from '../support/upstream-as.ts';
import { send, type RawResponse } from '../gateway/http-client.ts';
import { confirmConnect, createBrowser, formAction, isConnectConfirmation, type Browser, type Page } from './browser.ts';
import { createCookieCodec, formTokens } from '../../src/authserver/login/cookies.ts';

/** A user of the gateway: who they are at our IdP, and their session. */
export interface TestUser {
  subject: string;
  sessionId: string;
}

export const ALICE: TestUser = { subject: 'alice', sessionId: 'sid-alice-1' };
export const BOB: TestUser = { subject: 'bob', sessionId: 'sid-bob-1' };

/** A fresh session of a user, so tests sharing a harness do not share upstream tokens or flows. */
export function sessionOf(subject: string): TestUser {
  return { subject, sessionId: randomUUID() };
}

/** Options of {@link startHarness}. */
export interface HarnessOptions {
  registration: UpstreamRegistration;
  /** `https`: the gateway's public URL is `https://gw.test` (needed for CIMD, whose client ids are https URLs). Default `loopback`. */
  publicUrl?: 'loopback' | 'https';
  /** The upstream's configured `auth.scopes`. Default none (the resource metadata's `scopes_supported` are asked for). */
  scopes?: string[];
  challenge?: ChallengeSetting;
  /** Upstream access token lifetime, seconds. Default 300. */
  accessTokenTtlSeconds?: number;
  /** Requests per minute and client address on the browser legs. Default unlimited. */
  rateLimit?: number;
  /** Extra upstreams served by the same gateway (hostile or broken ones), all in mode `oauth`. */
  extraUpstreams?: Array<{ name: string; url: string; scopes?: string[]; clientId?: string; clientSecret?: string; issuer?: string }>;
}

/** A running harness. */
export interface Harness {
  upstream: UpstreamWithAs;
  /** Where agents and browsers see the gateway (`http://127.0.0.1:<port>` or `https://gw.test`). */
  publicUrl: string;
  /** Where it really listens. */
  listenUrl: string;
  store: Store;
  stores: UpstreamStores;
  flows: UpstreamFlows;
  /** A second flow engine over the same store, as another replica would have. */
  replicaFlows(): UpstreamFlows;
  /** Moves the gateway's clock (stores, flows, credential) forward. */
  advance(ms: number): void;
  /** `onConnected` events, in order. */
  connected: ConnectedEvent[];
  /** Our bearer token for a user (the stand-in for our JWT). */
  bearer(user: TestUser): string;
  /** A browser; signed in to mcpgate as `user` when given. */
  browser(user?: TestUser): Browser;
  /** A JSON-RPC request through the gateway path to an upstream (default the `notes` upstream). */
  rpc(user: TestUser, method: string, params?: Record<string, unknown>, upstream?: string): Promise<RawResponse>;
  /** Sends a raw request to the gateway (public URL path). */
  request(path: string, options?: { method?: string; user?: TestUser }): Promise<RawResponse>;
  /** Opens `authUrl` and goes through the upstream's login and consent; returns the page the gateway answered with. */
  connect(browser: Browser, authUrl: string, options?: { login?: string; decision?: 'approve' | 'deny'; stopAtCallback?: boolean }): Promise<Page>;
  close(): Promise<void>;
}

const GATEWAY_TOKEN = /^Bearer gw-test\.([a-z]+)\.([A-Za-z0-9-]+)$/;

/** Starts the upstream (MCP server + its own authorization server) and the gateway pieces in front of it. */
export async function startHarness(options: HarnessOptions): Promise<Harness> {
  let skew = 0;
  const now = () => Date.now() + skew;
  const port = await freePort();
  const listenUrl = `http://127.0.0.1:${port}`;
  const publicUrl = options.publicUrl === 'https' ? 'https://gw.test' : listenUrl;
  const hosts = { [publicUrl]: listenUrl };

  const upstream = await startUpstreamWithAs({
    registration: options.registration,
    accessTokenTtlSeconds: options.accessTokenTtlSeconds,
    resolveClientIdUrl: (url) => (url.startsWith(`${publicUrl}/`) ? listenUrl + url.slice(publicUrl.length) : url),
  });

  const store = createMemoryStore({ now });
  const sealer = createSealer({ keys: [{ id: 'test', key: new Uint8Array(32).fill(7) }] });
  const stores = createUpstreamStores({ store, sealer, now });
  // Dev-mode style: http allowed, but only 127.0.0.1 among internal addresses, so SSRF targets are still refused.
  const fetch: GuardedFetch = createGuardedFetch({ allowHttp: true, allowHosts: ['127.0.0.1'], maxBytes: 64 * 1024, timeoutMs: 3000 });
  const discovery = createDiscovery({ fetch, allowHttp: true, now, failureTtlMs: 0 });
  const registration = createClientRegistration({ fetch, stores, publicUrl, now });
  const flows = createUpstreamFlows({ stores, discovery, registration, fetch, publicUrl, now });

  const oauthUpstreams: OAuthUpstream[] = [
    { name: 'notes', url: upstream.mcpUrl, scopes: options.scopes ?? [], ...(upstream.client ? { ...upstream.client, issuer: upstream.issuer } : {}) },
    ...(options.extraUpstreams ?? []).map((u) => ({ ...u, scopes: u.scopes ?? [] })),
  ];
  const logger = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
  const metrics = createGatewayMetrics(createRegistry());
  const capabilities = createClientCapabilities({ store, now });
  const streams = createStreamRegistry();
  const connected: ConnectedEvent[] = [];

  const gatewayUpstreams: Upstream[] = oauthUpstreams.map((u) => ({
    name: u.name,
    url: new URL(u.url),
    resource: `${publicUrl}/${u.name}/mcp`,
    dispatcher: new Pool(new URL(u.url).origin),
    credentials: createOAuthCredential({ upstream: u, flows, now }),
  }));
  const authenticator: Authenticator = {
    async authenticate(ctx) {
      const match = GATEWAY_TOKEN.exec(ctx.req.headers.authorization ?? '');
      if (!match) throw new InvalidToken('test bearer token required');
      return principalOf({ subject: match[1]!, sessionId: match[2]! });
    },
  };
  const forms = formTokens(createCookieCodec({ key: randomBytes(32), secure: false }));
  const routes = applyRouteLimits([
    ...createUpstreamOAuthRoutes({
      flows,
      stores,
      registration,
      upstreams: oauthUpstreams,
      browser: {
        current(req) {
          const value = /(?:^|;\s*)test-login=([a-z]+)\.([A-Za-z0-9-]+)/.exec(req.headers.cookie ?? '');
          return value ? { subject: value[1]!, sessionId: value[2]! } : undefined;
        },
        formToken: (req, ...bind) => forms.issue(req, 600, ...bind),
        checkFormToken: (req, token, ...bind) => forms.verify(req, token, ...bind),
      },
      authenticate: async (ctx) => (await authenticator.authenticate(ctx, gatewayUpstreams[0]!))!,
      basePath: '',
      onConnected: (event) => {
        connected.push(event);
        streams.notifyElicitationComplete(event);
      },
    }),
    ...createMcpRoutes({
      upstreams: gatewayUpstreams,
      authenticator,
      logger,
      metrics,
      publicOrigin: publicUrl,
      allowedOrigins: [],
      maxBodyBytes: 1 << 20,
      upstreamTimeoutMs: 10_000,
      basePath: '',
      authRequired: createAuthRequiredRenderer({ capabilities, streams, settingFor: () => options.challenge ?? 'auto' }),
      clientCapabilities: capabilities,
      streams,
    }),
  ], {
    store,
    basePath: '',
    overrides: Object.fromEntries(
      (['upstreamStart', 'upstreamCallback', 'connect'] as const).map((id) => [id, { perIp: options.rateLimit ?? 1000, global: 100_000 }]),
    ),
    sendPage: (ctx, status, title, message, headers) => sendErrorPage(ctx.res, status, title, message, { headers }),
    now,
  });
  const frontDoor = createFrontDoor({ routes, logger, metrics, publicUrl: new URL(publicUrl), trustedProxies: [] });
  await frontDoor.listen('127.0.0.1', port);

  const bearer = (user: TestUser) => `Bearer gw-test.${user.subject}.${user.sessionId}`;

  return {
    upstream,
    publicUrl,
    listenUrl,
    store,
    stores,
    flows,
    connected,
    replicaFlows: () =>
      createUpstreamFlows({
        stores,
        discovery: createDiscovery({ fetch, allowHttp: true, now }),
        registration: createClientRegistration({ fetch, stores, publicUrl, now }),
        fetch,
        publicUrl,
        now,
      }),
    advance(ms) {
      skew += ms;
    },
    bearer,
    browser(user) {
      const browser = createBrowser({ hosts });
      if (user) browser.setCookie(publicUrl, 'test-login', `${user.subject}.${user.sessionId}`);
      return browser;
    },
    rpc(user, method, params = {}, name = 'notes') {
      return send(new URL(`${listenUrl}/${name}/mcp`), {
        method: 'POST',
        headers: { authorization: bearer(user), 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
      });
    },
    request(path, o = {}) {
      return send(new URL(listenUrl + path), { method: o.method ?? 'GET', headers: o.user ? { authorization: bearer(o.user) } : {} });
    },
    async connect(browser, authUrl, o = {}) {
      const atCallback = (url: URL) => url.href.startsWith(`${publicUrl}/oauth/upstream/callback`);
      let page = await browser.open(authUrl, o.stopAtCallback ? { stopAt: atCallback } : {});
      // The user confirms which mcpgate account the upstream is connected to.
      if (isConnectConfirmation(page)) page = await confirmConnect(browser, page, o.stopAtCallback ? { stopAt: atCallback } : {});
      for (let step = 0; step < 4 && page.url.startsWith(upstream.issuer) && page.status === 200; step++) {
        const stopAt = o.stopAtCallback ? { stopAt: atCallback } : {};
        if (/\/login"/.test(page.body)) page = await browser.submit(formAction(page, /\/login$/), { login: o.login ?? 'alice-up' }, stopAt);
        else page = await browser.submit(formAction(page, o.decision === 'deny' ? /\/deny$/ : /\/approve$/), {}, stopAt);
      }
      return page;
    },
    async close() {
      await frontDoor.shutdown(0);
      await Promise.all(gatewayUpstreams.map((u) => u.dispatcher.close()));
      await fetch.close();
      await store.close();
      await upstream.close();
    },
  };

  function principalOf(user: TestUser): Principal {
    return { ...user, clientId: 'test-agent', scopes: ['mcp'], expiresAt: Math.floor(now() / 1000) + 600 };
  }
}

/** The auth_required object of a tool result (the channel for tools/call without URL elicitation). */
export function authRequiredOf(response: RawResponse): { auth_url: string; server_name: string; message: string; status: string } {
  const body = JSON.parse(response.body) as { result?: { isError?: boolean; structuredContent?: Record<string, string> } };
  const content = body.result?.structuredContent;
  if (!body.result?.isError || content?.status !== 'auth_required') throw new Error(`not an auth_required tool result: ${response.status} ${response.body.slice(0, 300)}`);
  return content as { auth_url: string; server_name: string; message: string; status: string };
}

/** The text of a successful tool result. */
export function toolText(response: RawResponse): string {
  const body = JSON.parse(response.body) as { result?: { isError?: boolean; content?: Array<{ text?: string }> } };
  if (!body.result || body.result.isError) throw new Error(`not a successful tool result: ${response.status} ${response.body.slice(0, 300)}`);
  return body.result.content?.map((c) => c.text ?? '').join('') ?? '';
}
