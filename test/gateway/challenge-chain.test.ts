/**
 * The HTTP re-challenge and the chain behind it (DESIGN §6.4, issue 5), nothing stubbed: the SDK
 * client is the agent with its own OAuth; Chromium is the user's browser; oidc-provider plays the
 * company IdP and, as a second unrelated instance, the upstream's own authorization server.
 *
 * The gateway answers a tool call with `403 insufficient_scope, scope="mcp mcpgate:connect:notes"`;
 * the SDK re-authorizes for that scope by itself; our /oauth/authorize takes the browser through
 * the upstream's authorization server before it issues our code; the agent's retry succeeds.
 * When the user denies at the upstream, the agent still gets its code, without the connect scope,
 * and the next call is challenged the same way (which the SDK stops at).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { decodeJwt } from 'jose';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { createApp, type App } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { freePort } from '../support/gateway.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { captureLogs } from '../support/logs.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';

let idp: DevIdp;
let upstream: UpstreamWithAs;
let app: App;
let gateway: string;
let browser: Browser;
let catcher: RecordingServer;

/**
 * The agent's OAuth as an SDK-based client implements it. "Opening the browser" drives Chromium
 * through whatever pages come: the IdP's login form, our consent page, the upstream's login and
 * consent, until our code reaches the client's redirect URI.
 */
class BrowserAgent implements OAuthClientProvider {
  private info: OAuthClientInformationMixed | undefined;
  private saved: OAuthTokens | undefined;
  private verifier = '';
  code: string | undefined;
  private page: Page | undefined;
  /** Origins of the pages the last authorization went through, in order. */
  visited: string[] = [];
  readonly context: BrowserContext;
  readonly login: string;
  readonly upstreamDecision: 'approve' | 'deny';

  constructor(context: BrowserContext, login: string, upstreamDecision: 'approve' | 'deny' = 'approve') {
    this.context = context;
    this.login = login;
    this.upstreamDecision = upstreamDecision;
  }
  get redirectUrl(): string {
    return `${catcher.url}/callback`;
  }
  get clientMetadata(): OAuthClientMetadata {
    return { client_name: 'Re-challenge agent', redirect_uris: [this.redirectUrl], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' };
  }
  clientInformation() {
    return this.info;
  }
  saveClientInformation(info: OAuthClientInformationMixed) {
    this.info = info;
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens: OAuthTokens) {
    this.saved = tokens;
  }
  saveCodeVerifier(verifier: string) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
  /** What the SDK calls when the server refuses a grant (here: the refresh after a step-up). */
  invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery') {
    if (scope === 'all' || scope === 'tokens') this.saved = undefined;
    if (scope === 'all' || scope === 'client') this.info = undefined;
  }
  async redirectToAuthorization(url: URL): Promise<void> {
    // One tab for the whole test, as a user's browser would: it is closed with the context.
    this.page ??= await this.context.newPage();
    const page = this.page;
    let done = false;
    const arrived = catcher.next('/callback').then((u) => {
      done = true;
      return u;
    });
    this.visited = [];
    await page.goto(url.href);
    for (let step = 0; step < 16 && !done; step++) await this.act(page);
    this.code = (await arrived).searchParams.get('code') ?? undefined;
  }
  /** One user action on whatever page is shown; resolves once the browser has moved on. */
  private async act(page: Page): Promise<void> {
    await page.waitForLoadState('load');
    // The document's own location, so the checks below look at the page that URL names (our
    // "Connecting to …" page replaces itself while it is being looked at).
    const url = await page.evaluate<string>('location.href').catch(() => undefined);
    if (url === undefined) return; // navigated meanwhile: look again
    const at = new URL(url).origin;
    if (at === new URL(catcher.url).origin) return;
    const has = (selector: string) => page.locator(selector).count().then((n) => n > 0);
    const user = idp.users.find((u) => u.login === this.login)!;
    let button: string | undefined;
    if (at === idp.issuer && (await has('input[name="password"]'))) {
      await page.fill('input[name="login"]', user.login);
      await page.fill('input[name="password"]', user.password);
      button = 'button[type="submit"]';
    } else if (at === upstream.issuer && (await has('input[name="login"]'))) {
      await page.fill('input[name="login"]', `${this.login}-up`);
      button = 'button[type="submit"]';
    } else if (at === upstream.issuer && (await has('button[value="approve"]'))) {
      button = `button[value="${this.upstreamDecision}"]`;
    } else if (at === gateway && (await has('button[value="approve"]'))) {
      button = 'button[value="approve"]';
    } else if (at === gateway && (await has('meta[http-equiv="refresh"]'))) {
      button = undefined; // our "Connecting to …" page moves on by itself
    } else if ((await page.evaluate<string>('location.href').catch(() => undefined)) !== url) {
      return; // moved on while being looked at
    } else {
      throw new Error(`unexpected page ${url}: ${(await page.content()).slice(0, 300)}`);
    }
    this.visited.push(`${at}${button ? '' : ' (continue)'}`);
    const moved = page.waitForURL((u) => u.href !== url, { waitUntil: 'commit' });
    if (button) await page.click(button, { noWaitAfter: true });
    await moved;
  }
}

before(async () => {
  [idp, upstream, catcher] = await Promise.all([startDevIdp(), startUpstreamWithAs({ registration: 'dcr', openHandshake: true }), startRecordingServer()]);
  const port = await freePort();
  gateway = `http://127.0.0.1:${port}`;
  const storeKey = randomBytes(32).toString('base64');
  const config = parseConfig(
    JSON.stringify({
      server: { listen: `127.0.0.1:${port}`, publicUrl: gateway, devMode: true, drainTimeout: '1s' },
      idp: { issuer: idp.issuer, clientId: idp.clientId, clientSecret: 'env:IDP_SECRET' },
      storage: { kind: 'memory', encryptionKeys: [{ id: 'k1', key: 'env:STORE_KEY' }] },
      upstreams: [{ name: 'notes', url: upstream.mcpUrl, auth: { mode: 'oauth', scopes: ['notes:read'], challenge: 'reauthorize' } }],
    }),
    'chain-config',
    { env: { IDP_SECRET: idp.clientSecret, STORE_KEY: storeKey }, readFile: () => { throw new Error('no files'); } },
  );
  app = createApp(config, { logDestination: captureLogs().destination });
  await app.listen({ host: '127.0.0.1', port });
  // A missing chromium is a failure, not a skip: `apt-get install chromium`.
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu', '--disable-dev-shm-usage'] });
});

after(async () => {
  await browser?.close();
  await app?.close();
  await Promise.all([upstream?.close(), catcher?.close(), idp?.close()]);
});

/** Signs the agent in (our OAuth, the IdP in the browser) and opens an MCP session; the upstream serves initialize without a token. */
async function signedIn(agent: BrowserAgent): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const url = new URL(`${gateway}/notes/mcp`);
  const first = new StreamableHTTPClientTransport(url, { authProvider: agent });
  await assert.rejects(new Client({ name: 'agent', version: '1.0.0' }).connect(first), UnauthorizedError);
  await first.finishAuth(agent.code!);
  const transport = new StreamableHTTPClientTransport(url, { authProvider: agent });
  const client = new Client({ name: 'agent', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

const whoami = (client: Client) => client.callTool({ name: 'whoami', arguments: {} });

describe('HTTP re-challenge: the SDK agent steps up and /oauth/authorize chains through the upstream', () => {
  test('403 insufficient_scope → the SDK re-authorizes for the connect scope → connected before our code → the retry succeeds', async () => {
    const agent = new BrowserAgent(await browser.newContext(), 'alice');
    const { client, transport } = await signedIn(agent);
    try {
      const before = decodeJwt(agent.tokens()!.access_token);
      assert.equal(before.scope, 'mcp');

      // The SDK sees 403 insufficient_scope, authorizes for the challenge's scope, and asks us to finish.
      await assert.rejects(whoami(client), UnauthorizedError);
      assert.deepEqual(
        agent.visited.filter((v) => !v.endsWith('(continue)')),
        [gateway, upstream.issuer, upstream.issuer],
        'our consent for the new scope (the IdP remembers the user), then the upstream login and consent',
      );
      await transport.finishAuth(agent.code!);
      const after = decodeJwt(agent.tokens()!.access_token);
      assert.equal(after.scope, 'mcp mcpgate:connect:notes');
      assert.notEqual(after.sid, before.sid, 'a new session, connected before its first token was issued');

      assert.deepEqual((await whoami(client)).content, [{ type: 'text', text: 'upstream user alice-up' }]);
    } finally {
      await client.close();
    }
    for (const seen of upstream.seenAuthorization) {
      if (seen) assert.equal(decodeJwt(seen.slice('Bearer '.length)).iss, upstream.issuer, 'the upstream saw only its own tokens');
    }
  });

  test('denied at the upstream: the code comes without the connect scope, and the next call is challenged again', async () => {
    const agent = new BrowserAgent(await browser.newContext(), 'bob', 'deny');
    const { client, transport } = await signedIn(agent);
    try {
      await assert.rejects(whoami(client), UnauthorizedError);
      await transport.finishAuth(agent.code!);
      assert.equal(decodeJwt(agent.tokens()!.access_token).scope, 'mcp');
      const error = await whoami(client).then(() => assert.fail('expected the same challenge'), (e: unknown) => e);
      assert.ok(error instanceof StreamableHTTPError, `got ${String(error)}`);
      assert.equal(error.code, 403);
    } finally {
      await client.close();
    }
  });
});
