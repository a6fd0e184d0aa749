/**
 * The HTTP side of the upstream OAuth flow (DESIGN §6.3, §6.5, §6.8):
 *
 * | method | path                             | who                | what |
 * |--------|----------------------------------|--------------------|------|
 * | GET    | /oauth/upstream/start?flow=…     | browser (cookie)   | same user? then on to the upstream's authorization endpoint |
 * | GET    | /oauth/upstream/callback         | browser (cookie)   | single-use state, RFC 9207 `iss`, code exchange, "Connected" page |
 * | GET    | /oauth/client-metadata.json      | upstream AS        | our Client ID Metadata Document |
 * | GET    | /connect/{name}                  | browser (cookie)   | starts a flow without waiting for a 401 |
 * | GET    | /connections                     | agent (our bearer) | the upstreams this session is connected to |
 * | DELETE | /connections/{name}              | agent (our bearer) | forget the token, revoke it at the upstream (RFC 7009) |
 *
 * The anti-phishing rule of URL elicitation: the URL an agent hands to a user carries only a
 * flow id; whoever opens it must be signed in to mcpgate as the user the flow belongs to, both
 * when it is opened and when the upstream sends the browser back. Otherwise a user could be
 * lured into connecting their upstream account to someone else's session.
 */
import type { IncomingMessage } from 'node:http';
import { HttpError, NotFound } from '../http/errors.ts';
import type { RequestContext, Route } from '../http/router.ts';
import type { FlowPrincipal, OAuthUpstream, UpstreamFlows } from './flow.ts';
import { FlowError, type FlowFailure } from './flow.ts';
import type { ClientRegistration } from './client-registration.ts';
import { sendPage, sendRedirect } from './pages.ts';
import type { UpstreamFlow } from './records.ts';
import type { UpstreamStores } from './stores.ts';

/** Who is at the browser, according to our login cookie (DESIGN §4). */
export interface BrowserSession {
  /**
   * The user and the session our login cookie names; undefined when absent, forged or expired.
   * `sessionId` is absent after a browser-only sign-in (it proves the user, and creates no session).
   */
  current(req: IncomingMessage): { subject: string; sessionId?: string } | undefined;
  /**
   * A URL that signs the browser in through the IdP and then returns to `returnTo` (a path under
   * our public URL). Undefined when no such login is offered: a "sign in first" page is shown.
   */
  loginUrl?(returnTo: string): string | undefined;
  /**
   * For `/connect/{name}` in a browser that signed in without a session: the user's one live
   * session, which is then the one connected. Undefined when the user has none or several
   * (nothing tells which one the user means), or when not offered.
   */
  soleSession?(subject: string, signal?: AbortSignal): Promise<string | undefined>;
}

/** Sent when a user finished connecting, so the agent's open stream can be told (`notifications/elicitation/complete`). */
export interface ConnectedEvent {
  sessionId: string;
  upstream: string;
  elicitationId: string;
  /** The agent's `Mcp-Session-Id` when the flow started; undefined when there was none. */
  mcpSessionId: string | undefined;
}

/** Dependencies of {@link createUpstreamOAuthRoutes}. */
export interface UpstreamOAuthRoutesOptions {
  flows: UpstreamFlows;
  stores: UpstreamStores;
  registration: ClientRegistration;
  /** The upstreams in mode `oauth`. */
  upstreams: readonly OAuthUpstream[];
  browser: BrowserSession;
  /**
   * Verifies our bearer token on `/connections` (401/403 as on the gateway path): a token for
   * `upstream` when given, else for any upstream of this list.
   */
  authenticate(ctx: RequestContext, upstream?: string): Promise<FlowPrincipal>;
  /** Base path of the public URL ('' or '/prefix'). */
  basePath: string;
  onConnected?(event: ConnectedEvent): void;
}

/** What `createFlow` mints: 24 random bytes, base64url. Anything else is not worth a store lookup. */
const FLOW_ID = /^[A-Za-z0-9_-]{32}$/;

const START_AGAIN = 'Return to your agent and retry: it will give you a new link.';

/** What each callback failure tells the user. */
const FAILURE_PAGES: Record<FlowFailure, { status: number; title: string; hint: string }> = {
  access_denied: { status: 403, title: 'Access not granted', hint: 'Nothing was connected. Your agent will ask again the next time it needs this server.' },
  authorization_error: { status: 502, title: 'Authorization failed', hint: START_AGAIN },
  iss_mismatch: { status: 400, title: 'Authorization refused', hint: START_AGAIN },
  iss_missing: { status: 400, title: 'Authorization refused', hint: START_AGAIN },
  invalid_response: { status: 400, title: 'Authorization failed', hint: START_AGAIN },
  exchange_failed: { status: 502, title: 'Authorization failed', hint: START_AGAIN },
};

/** Builds the routes; see the module comment for the table. */
export function createUpstreamOAuthRoutes(options: UpstreamOAuthRoutesOptions): Route[] {
  const { flows, stores, browser, basePath } = options;
  const byName = new Map(options.upstreams.map((u) => [u.name, u]));

  /** Sends a browser without our login cookie to sign in (and come back), or explains that it must. */
  function signInFirst(ctx: RequestContext): void {
    const returnTo = ctx.url.pathname + ctx.url.search;
    const login = browser.loginUrl?.(returnTo);
    if (login) return sendRedirect(ctx.res, login);
    sendPage(ctx.res, 401, {
      title: 'Sign in to mcpgate first',
      message: 'This browser is not signed in to mcpgate, so it cannot be connected on your behalf.',
      hint: 'Sign in through your agent (or your organisation’s mcpgate sign-in page) in this browser, then open the link again.',
    });
  }

  function wrongUser(ctx: RequestContext): void {
    sendPage(ctx.res, 403, {
      title: 'This link is for another user',
      message: 'The authorization link was created for a different mcpgate user than the one signed in to this browser. Nothing was connected.',
      hint: 'Open links only from your own agent. If you received this link from someone, do not use it.',
    });
  }

  function whichSession(ctx: RequestContext, name: string): void {
    sendPage(ctx.res, 409, {
      title: 'Connect from your agent',
      message: `You are signed in, but this browser did not sign in through your agent, and mcpgate cannot tell which of your agent sessions (if any) to connect to ${name}.`,
      hint: 'Use the link your agent shows when it needs this server, or sign in through your agent in this browser and open this page again.',
    });
  }

  function expired(ctx: RequestContext): void {
    sendPage(ctx.res, 400, { title: 'This link has expired', message: 'The authorization link has expired or was already used.', hint: START_AGAIN });
  }

  async function start(ctx: RequestContext): Promise<void> {
    const flowId = ctx.url.searchParams.get('flow');
    const flow = flowId && FLOW_ID.test(flowId) ? await stores.flows.get(flowId) : undefined;
    if (!flow) return expired(ctx);
    const who = browser.current(ctx.req);
    if (!who) return signInFirst(ctx);
    if (who.subject !== flow.subject) return wrongUser(ctx);
    ctx.log.upstream = flow.upstream;
    sendRedirect(ctx.res, flows.authorizationUrl(flow), 302);
  }

  async function callback(ctx: RequestContext): Promise<void> {
    const params = ctx.url.searchParams;
    const state = params.get('state');
    if (!state) {
      return sendPage(ctx.res, 400, { title: 'Invalid authorization response', message: 'The response has no state parameter.', hint: START_AGAIN });
    }
    const flow = await stores.flows.byState(state);
    if (!flow) return expired(ctx);
    ctx.log.upstream = flow.upstream;
    // Checked before the state is consumed, so a stranger's browser cannot burn the user's flow.
    const who = browser.current(ctx.req);
    if (!who) return signInFirst(ctx);
    if (who.subject !== flow.subject) return wrongUser(ctx);
    if (!(await stores.flows.take(flow))) return expired(ctx);

    try {
      await flows.complete(flow, params, ctx.signal);
    } catch (err) {
      if (!(err instanceof FlowError)) throw err;
      ctx.log.flowError = err.failure;
      // A chained authorization (our /oauth/authorize) goes on without this connection: it decides what the agent gets.
      if (flow.returnTo) return sendRedirect(ctx.res, flow.returnTo);
      const page = FAILURE_PAGES[err.failure];
      return sendPage(ctx.res, page.status, { title: page.title, message: err.message, hint: page.hint });
    }
    notifyConnected(flow);
    if (flow.returnTo) return sendRedirect(ctx.res, flow.returnTo);
    sendPage(ctx.res, 200, {
      title: `Connected to ${flow.upstream}`,
      message: `mcpgate can now use ${flow.upstream} on your behalf. Return to your agent and retry.`,
      hint: 'You can close this window.',
    });
  }

  function notifyConnected(flow: UpstreamFlow): void {
    try {
      options.onConnected?.({ sessionId: flow.sessionId, upstream: flow.upstream, elicitationId: flow.elicitationId, mcpSessionId: flow.mcpSessionId });
    } catch {
      // A notification is a courtesy: the user is connected whatever happens to it.
    }
  }

  function clientMetadata(ctx: RequestContext): void {
    const body = JSON.stringify(options.registration.metadataDocument());
    ctx.res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      // Authorization servers cache it (CIMD draft §4.3); it changes only with the public URL.
      'cache-control': 'public, max-age=3600',
    });
    ctx.res.end(body);
  }

  async function connect(ctx: RequestContext): Promise<void> {
    const upstream = byName.get(ctx.params.name!);
    if (!upstream) return sendPage(ctx.res, 404, { title: 'Unknown server', message: 'No server with that name is connected through its own authorization.' });
    ctx.log.upstream = upstream.name;
    const who = browser.current(ctx.req);
    if (!who) return signInFirst(ctx);
    // The session to connect: the one this browser signed in with, else the user's only one.
    const sessionId = who.sessionId ?? (await browser.soleSession?.(who.subject, ctx.signal));
    if (sessionId === undefined) return whichSession(ctx, upstream.name);
    let authUrl: string;
    try {
      authUrl = (await flows.startFlow({ principal: { subject: who.subject, sessionId }, upstream })).authUrl;
    } catch (err) {
      // A browser gets a page, not JSON: discovery and registration errors are ours to word (502).
      if (!(err instanceof HttpError) || err.status !== 502) throw err;
      return sendPage(ctx.res, 502, { title: `Cannot connect to ${upstream.name}`, message: err.message, hint: 'Tell your administrator if this keeps happening.' });
    }
    sendRedirect(ctx.res, authUrl);
  }

  async function list(ctx: RequestContext): Promise<void> {
    const principal = await options.authenticate(ctx);
    const connected = new Set(await stores.tokens.list(principal.sessionId));
    const body = JSON.stringify({
      connections: options.upstreams.map((u) => ({ upstream: u.name, connected: connected.has(u.name), connect_url: `${ctx.url.origin}${basePath}/connect/${u.name}` })),
    });
    ctx.res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    ctx.res.end(body);
  }

  async function disconnect(ctx: RequestContext): Promise<void> {
    const upstream = byName.get(ctx.params.name!);
    if (!upstream) throw new NotFound(`no upstream named "${ctx.params.name}" uses its own authorization`);
    ctx.log.upstream = upstream.name;
    const principal = await options.authenticate(ctx, upstream.name);
    const result = await flows.disconnect(principal.sessionId, upstream.name);
    const body = JSON.stringify({ upstream: upstream.name, disconnected: result.connected, revoked: result.revoked });
    ctx.res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    ctx.res.end(body);
  }

  return [
    { method: 'GET', path: `${basePath}/oauth/upstream/start`, handler: start },
    { method: 'GET', path: `${basePath}/oauth/upstream/callback`, handler: callback },
    { method: 'GET', path: `${basePath}/oauth/client-metadata.json`, handler: clientMetadata },
    { method: 'GET', path: `${basePath}/connect/:name`, handler: connect, name: '/connect/{name}' },
    { method: 'GET', path: `${basePath}/connections`, handler: list },
    { method: 'DELETE', path: `${basePath}/connections/:name`, handler: disconnect, name: '/connections/{name}' },
  ];
}
