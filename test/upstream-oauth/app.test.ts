/**
 * End to end through `createApp`: our JWT from our real token endpoint, our signed login cookie,
 * the gateway path, the auth_required renderer, the upstream OAuth routes, and the SDK client as
 * the agent, in front of a real MCP server whose own authorization server is a real
 * oidc-provider. The only shortcut is the IdP leg of our login (issue 4 tests it): the session and
 * our code are seeded the way `/oauth/callback` leaves them, and the login cookie is the one it sets.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitationCompleteNotificationSchema, ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import { decodeJwt } from 'jose';
import type { Browser as Chromium } from 'playwright-core';
import { createApp, type App } from '../../src/app.ts';
import { createCookieCodec, deriveCookieKey, loginCookie } from '../../src/authserver/login/cookies.ts';
import { generateSigningKeyPem, generateStoreKey } from '../../src/authserver/tokens/keys.ts';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/port.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createUpstreamStores, type UpstreamStores } from '../../src/upstream-oauth/stores.ts';
import { login, postForm, refusingIdp, registerClient, type AuthGateway } from '../authserver/fixture.ts';
import { approveAtUpstream, closeChromium, confirmConnect, launchChromium, newBrowserContext } from '../support/browser-agent.ts';
import { freePort } from '../support/gateway.ts';
import { waitFor } from '../support/mcp-upstream.ts';
import { captureLogs, type LogCapture } from '../support/logs.ts';
import { metricValue, scrapeMetrics } from '../support/metrics.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';
import { send } from '../gateway/http-client.ts';
import { confirmConnect as clickConnect, createBrowser, formAction, isConnectConfirmation, type Browser } from './browser.ts';

let upstream: UpstreamWithAs;
let app: App;
let gw: AuthGateway;
let base: string;
let logs: LogCapture;
let storeKey: string;
let store: Store;
/** How far the gateway's clock runs ahead of the real one (the upstream's authorization server keeps real time). */
let skew = 0;
/** The gateway's upstream token rows, read through the same store and sealing key. */
let upstreamRows: UpstreamStores;
/** Launched by the one test that needs a real browser; closed in `after()` whatever that test did. */
let chromium: Chromium | undefined;

before(async () => {
  upstream = await startUpstreamWithAs({ registration: 'dcr', openHandshake: true, users: ['alice-up', 'bob-up', 'carol-up'] });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  storeKey = generateStoreKey();
  const pem = generateSigningKeyPem();
  const config = parseConfig(
    JSON.stringify({
      server: { listen: `127.0.0.1:${port}`, publicUrl: base, devMode: true, drainTimeout: '1s' },
      idp: { issuer: 'http://127.0.0.1:9/unused', clientId: 'mcpgate' },
      // Our access tokens outlive the clock moves below (an upstream token "expiring" is a clock move).
      authServer: { signingKeys: ['file:/keys/signing.pem'], accessTokenTtl: '1h' },
      storage: { kind: 'memory', encryptionKeys: [{ id: 'k1', key: 'env:STORE_KEY' }] },
      upstreams: [{ name: 'notes', url: upstream.mcpUrl, auth: { mode: 'oauth', scopes: ['notes:read'] } }],
    }),
    'test-config',
    { env: { STORE_KEY: storeKey }, readFile: () => pem },
  );
  const now = () => Date.now() + skew;
  store = createMemoryStore({ now });
  logs = captureLogs();
  app = createApp(config, { logDestination: logs.destination, store, idpClient: refusingIdp, now });
  await app.listen({ host: '127.0.0.1', port });
  const sealer = createSealer({ keys: [{ id: 'k1', key: Buffer.from(storeKey, 'base64') }] });
  const stores = createAuthStores({ store, sealer, now });
  upstreamRows = createUpstreamStores({ store, sealer, now });
  gw = { app, url: new URL(base), issuer: base, resource: (name) => `${base}/${name}/mcp`, store, stores, now, advance: () => {}, logs, close: () => app.close() };
});

after(async () => {
  await closeChromium(chromium);
  await app?.close();
  await upstream?.close();
});

/** A user logged in through our token endpoint, and a browser carrying the login cookie our callback sets. */
async function signIn(subject: string): Promise<{ accessToken: string; refreshToken: string; sessionId: string; clientId: string; browser: Browser }> {
  const client = await registerClient(gw);
  const tokens = await login(gw, client, { resource: gw.resource('notes'), subject });
  const { name, value } = loginCookieFor(subject, tokens.sessionId);
  const browser = createBrowser();
  browser.setCookie(base, name, value);
  return { ...tokens, clientId: client.clientId, browser };
}

/** The login cookie our callback would set (`/oauth/login` sets one without a session), as a Playwright cookie for the gateway's origin. */
function loginCookieFor(subject: string, sessionId: string | undefined) {
  const codec = createCookieCodec({ key: deriveCookieKey({ encryptionKey: storeKey }).key, secure: false });
  const [name, value] = loginCookie(codec).issue({ sub: subject, sid: sessionId }).split(';')[0]!.split(/=(.*)/s) as [string, string];
  return { name, value, url: base, httpOnly: true, sameSite: 'Lax' as const };
}

/** The user's trip through the upstream's own authorization server: login there, approve. */
async function authorizeAtUpstream(browser: Browser, url: string, upstreamUser: string) {
  let page = await browser.open(url);
  if (isConnectConfirmation(page)) page = await clickConnect(browser, page);
  for (let step = 0; step < 4 && page.url.startsWith(upstream.issuer) && page.status === 200; step++) {
    page = /\/login"/.test(page.body)
      ? await browser.submit(formAction(page, /\/login$/), { login: upstreamUser })
      : await browser.submit(formAction(page, /\/approve$/), {});
  }
  return page;
}

function agent(accessToken: string, capabilities: Record<string, unknown>) {
  const client = new Client({ name: 'e2e-agent', version: '1.0.0' }, { capabilities });
  const transport = new StreamableHTTPClientTransport(new URL(`${base}/notes/mcp`), { requestInit: { headers: { authorization: `Bearer ${accessToken}` } } });
  return { client, transport };
}

describe('mode oauth end to end (createApp, SDK client)', () => {
  test('URL elicitation: -32042 with our link, the held stream hears elicitation/complete, the retry succeeds', async () => {
    const alice = await signIn('alice');
    const { client, transport } = agent(alice.accessToken, { elicitation: { url: {} } });
    const completed: string[] = [];
    client.setNotificationHandler(ElicitationCompleteNotificationSchema, (n) => void completed.push(n.params.elicitationId));
    await client.connect(transport);
    try {
      const error = await client.callTool({ name: 'whoami', arguments: {} }).then(
        () => assert.fail('expected URL elicitation'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof McpError);
      assert.equal(error.code, ErrorCode.UrlElicitationRequired);
      const [elicitation] = (error.data as { elicitations: Array<{ mode: string; url: string; elicitationId: string }> }).elicitations;
      assert.equal(elicitation!.mode, 'url');
      assert.ok(elicitation!.url.startsWith(`${base}/oauth/upstream/start?flow=`));

      const page = await authorizeAtUpstream(alice.browser, elicitation!.url, 'alice-up');
      assert.equal(page.status, 200, page.body);
      assert.match(page.body, /Connected to notes/);
      await waitFor(() => completed.includes(elicitation!.elicitationId), 'notifications/elicitation/complete');

      const result = await client.callTool({ name: 'whoami', arguments: {} });
      assert.deepEqual(result.content, [{ type: 'text', text: 'upstream user alice-up' }]);
    } finally {
      await client.close();
    }
  });

  test('a client without URL elicitation gets the tool result; connect and disconnect through our token', async () => {
    const bob = await signIn('bob');
    const { client, transport } = agent(bob.accessToken, {});
    await client.connect(transport);
    try {
      const first = await client.callTool({ name: 'whoami', arguments: {} });
      assert.equal(first.isError, true);
      const required = first.structuredContent as { status: string; auth_url: string; server_name: string };
      assert.equal(required.status, 'auth_required');
      assert.equal(required.server_name, 'notes');

      // Alice's browser cannot complete Bob's link.
      const alice = await signIn('alice');
      const refused = await alice.browser.open(required.auth_url);
      assert.equal(refused.status, 403);

      assert.equal((await authorizeAtUpstream(bob.browser, required.auth_url, 'bob-up')).status, 200);
      const second = await client.callTool({ name: 'whoami', arguments: {} });
      assert.deepEqual(second.content, [{ type: 'text', text: 'upstream user bob-up' }]);

      const auth = { authorization: `Bearer ${bob.accessToken}` };
      const listed = await send(new URL(`${base}/connections`), { headers: auth });
      assert.equal(listed.status, 200, listed.body);
      assert.equal(JSON.parse(listed.body).connections[0].connected, true);
      assert.equal((await send(new URL(`${base}/connections`), {})).status, 401);
      const removed = await send(new URL(`${base}/connections/notes`), { method: 'DELETE', headers: auth });
      assert.deepEqual(JSON.parse(removed.body), { upstream: 'notes', disconnected: true, revoked: true });
      assert.ok(upstream.revocations.some((r) => r.tokenTypeHint === 'refresh_token'));

      const third = await client.callTool({ name: 'whoami', arguments: {} });
      assert.equal((third.structuredContent as { status: string }).status, 'auth_required');
    } finally {
      await client.close();
    }
  });

  test('in Chromium: the link from the tool result, the upstream login and consent, our "Connected" page; another user is refused', async () => {
    const carol = await signIn('carol');
    const { client, transport } = agent(carol.accessToken, {});
    await client.connect(transport);
    chromium = await launchChromium();
    const browser = chromium;
    try {
      const required = (await client.callTool({ name: 'whoami', arguments: {} })).structuredContent as { auth_url: string };

      const stranger = await newBrowserContext(browser);
      await stranger.addCookies([loginCookieFor('dave', 'sid-dave')]);
      const strangerPage = await stranger.newPage();
      const refused = await strangerPage.goto(required.auth_url);
      assert.equal(refused?.status(), 403);
      assert.equal(await strangerPage.locator('h1').textContent(), 'This link is for another user');

      const context = await newBrowserContext(browser);
      await context.addCookies([loginCookieFor('carol', carol.sessionId)]);
      const page = await context.newPage();
      await page.goto(required.auth_url);
      assert.equal(await page.locator('h1').textContent(), 'Connect notes to your mcpgate account?');
      await confirmConnect(page, 'carol');
      await approveAtUpstream(page, 'carol-up');
      await page.waitForURL(`${base}/oauth/upstream/callback?**`);
      assert.equal(await page.locator('h1').textContent(), 'Connected to notes');
      assert.match((await page.locator('main').textContent()) ?? '', /Return to your agent and retry/);

      const result = await client.callTool({ name: 'whoami', arguments: {} });
      assert.deepEqual(result.content, [{ type: 'text', text: 'upstream user carol-up' }]);
    } finally {
      await client.close();
    }
  });

  test('the upstream saw only tokens of its own authorization server; our JWTs stayed with us; no secret in the logs', async () => {
    const seen = upstream.seenAuthorization.filter((h): h is string => h !== undefined);
    assert.ok(seen.length >= 2);
    for (const header of seen) {
      const claims = decodeJwt(header.replace(/^Bearer /, ''));
      assert.equal(claims.iss, upstream.issuer, 'never our token, never the company IdP token');
      assert.equal(claims.aud, upstream.mcpUrl);
    }
    const text = logs.text();
    for (const header of seen) assert.ok(!text.includes(header.slice(7)), 'an upstream token was logged');
    assert.ok(!/code=|state=|flow=/.test(text), 'a code, state or flow id was logged');
  });
});

describe('a session that ends takes its upstream grants with it', () => {
  /** A signed-in user whose session is connected to the upstream; returns the upstream refresh token the gateway holds. */
  async function connectedUser(subject: string, upstreamUser: string) {
    const user = await signIn(subject);
    const { client, transport } = agent(user.accessToken, {});
    await client.connect(transport);
    try {
      const required = (await client.callTool({ name: 'whoami', arguments: {} })).structuredContent as { auth_url: string };
      assert.equal((await authorizeAtUpstream(user.browser, required.auth_url, upstreamUser)).status, 200);
      assert.deepEqual((await client.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: `upstream user ${upstreamUser}` }]);
    } finally {
      await client.close();
    }
    const row = await upstreamRows.tokens.get(user.sessionId, 'notes');
    assert.ok(row?.refreshToken, 'connected, with a refresh token from the upstream');
    return { ...user, upstreamRefreshToken: row.refreshToken };
  }

  /** The upstream's authorization server recorded the revocation of this grant (RFC 7009), and the gateway keeps no row of it. */
  async function assertForgotten(user: { sessionId: string; accessToken: string; upstreamRefreshToken: string }) {
    const revoked = upstream.revocations.find((r) => r.tokenSha256 === upstream.digest(user.upstreamRefreshToken));
    assert.equal(revoked?.tokenTypeHint, 'refresh_token', 'revoked at the upstream');
    assert.deepEqual(await upstreamRows.tokens.list(user.sessionId), []);
    assert.equal(await upstreamRows.tokens.get(user.sessionId, 'notes'), undefined);
    // The session is over: its token no longer lists (or reaches) anything.
    const listed = await send(new URL(`${base}/connections`), { headers: { authorization: `Bearer ${user.accessToken}` } });
    assert.equal(listed.status, 401);
  }

  test('POST /oauth/logout', async () => {
    const user = await connectedUser('logout-one', 'alice-up');
    const other = await connectedUser('logout-one', 'bob-up');
    const res = await send(new URL(`${base}/oauth/logout`), { method: 'POST', headers: { authorization: `Bearer ${user.accessToken}` } });
    assert.equal(res.status, 204);
    await assertForgotten(user);
    // Another session of the same user keeps its connection.
    const listed = await send(new URL(`${base}/connections`), { headers: { authorization: `Bearer ${other.accessToken}` } });
    assert.equal(JSON.parse(listed.body).connections[0].connected, true);
  });

  test('POST /oauth/logout/all: every session of the user', async () => {
    const first = await connectedUser('logout-all', 'alice-up');
    const second = await connectedUser('logout-all', 'carol-up');
    const res = await send(new URL(`${base}/oauth/logout/all`), { method: 'POST', headers: { authorization: `Bearer ${second.accessToken}` } });
    assert.equal(res.status, 204);
    await assertForgotten(first);
    await assertForgotten(second);
  });

  test('a reused refresh token (OAuth 2.1 §4.3.1) ends the family and its upstream grant', async () => {
    const user = await connectedUser('reuser', 'carol-up');
    const rotated = await postForm(`${base}/oauth/token`, { grant_type: 'refresh_token', client_id: user.clientId, refresh_token: user.refreshToken });
    assert.equal(rotated.status, 200);
    // Its successor used too: the first token is no longer the immediately previous one (no grace).
    const again = await postForm(`${base}/oauth/token`, { grant_type: 'refresh_token', client_id: user.clientId, refresh_token: String(rotated.body.refresh_token) });
    assert.equal(again.status, 200);
    const reused = await postForm(`${base}/oauth/token`, { grant_type: 'refresh_token', client_id: user.clientId, refresh_token: user.refreshToken });
    assert.equal(reused.status, 400);
    assert.equal(reused.body.error, 'invalid_grant');
    await assertForgotten(user);
  });

  test('POST /oauth/revoke of our refresh token ends the family and its upstream grant', async () => {
    const user = await connectedUser('revoker', 'bob-up');
    const res = await postForm(`${base}/oauth/revoke`, { client_id: user.clientId, token: user.refreshToken, token_type_hint: 'refresh_token' });
    assert.equal(res.status, 200);
    await assertForgotten(user);
  });
});

describe('browsers that must sign in first', () => {
  test('without our login cookie, the connect link and /connect/{name} send the browser to /oauth/login and back', async () => {
    const frank = await signIn('frank');
    const { client, transport } = agent(frank.accessToken, {});
    await client.connect(transport);
    try {
      const required = (await client.callTool({ name: 'whoami', arguments: {} })).structuredContent as { auth_url: string };
      for (const url of [required.auth_url, `${base}/connect/notes`]) {
        const first = await createBrowser().open(url, { stopAt: (next) => next.pathname === '/oauth/login' });
        assert.equal(first.status, 303);
        const to = new URL(String(first.headers.location), url);
        assert.equal(to.href.startsWith(`${base}/oauth/login?`), true);
        const target = new URL(url);
        assert.equal(to.searchParams.get('return_to'), target.pathname + target.search);
      }
    } finally {
      await client.close();
    }
  });

  test('/connect/{name} connects only the session this browser signed in with: after a sign-in without a session the browser is told to use the agent\'s link', async () => {
    const grace = await signIn('grace');
    const browser = createBrowser();
    const { name, value } = loginCookieFor('grace', undefined);
    browser.setCookie(base, name, value);
    const page = await browser.open(`${base}/connect/notes`);
    assert.equal(page.status, 409);
    assert.match(page.body, /Connect from your agent/);
    assert.equal(await upstreamRows.tokens.get(grace.sessionId, 'notes'), undefined, 'no session was picked for the browser');

    // The agent's own browser (its login cookie names the session) connects, after one click.
    const page2 = await authorizeAtUpstream(grace.browser, `${base}/connect/notes`, 'alice-up');
    assert.equal(page2.status, 200, page2.body);
    assert.match(page2.body, /Connected to notes/);
    assert.ok(await upstreamRows.tokens.get(grace.sessionId, 'notes'));
  });
});

describe('metrics', () => {
  const flows = (text: string, outcome: string) => metricValue(text, 'mcpgate_auth_flows_total', { upstream: 'notes', outcome });
  const refreshes = (text: string, outcome: string) => metricValue(text, 'mcpgate_token_refreshes_total', { kind: 'oauth', upstream: 'notes', outcome });

  test('/metrics counts upstream flows started, completed and failed, and upstream token refreshes; no label holds a secret', async () => {
    const before = await scrapeMetrics(base);
    const henry = await signIn('henry');

    // A flow the user declines at the upstream: started, then failed.
    const declined = await clickConnect(henry.browser, await henry.browser.open(`${base}/connect/notes`));
    assert.ok(declined.url.startsWith(upstream.issuer));
    let page = await henry.browser.submit(formAction(declined, /\/login$/), { login: 'alice-up' });
    page = await henry.browser.submit(formAction(page, /\/deny$/), {});
    assert.equal(page.status, 403, page.body);
    assert.match(page.body, /Access not granted/);

    // One that completes.
    assert.equal((await authorizeAtUpstream(henry.browser, `${base}/connect/notes`, 'alice-up')).status, 200);
    const connected = (await upstreamRows.tokens.get(henry.sessionId, 'notes'))!;

    // The upstream token about to expire (by the gateway's clock): the next call refreshes it first.
    const refreshesAtUpstream = upstream.refreshCount();
    skew += connected.expiresAt! - Date.now() - 30_000;
    try {
      const { client, transport } = agent(henry.accessToken, {});
      await client.connect(transport);
      try {
        assert.deepEqual((await client.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'upstream user alice-up' }]);
      } finally {
        await client.close();
      }
    } finally {
      skew = 0;
    }
    assert.equal(upstream.refreshCount() - refreshesAtUpstream, 1);

    const after = await scrapeMetrics(base);
    assert.equal(flows(after, 'started') - flows(before, 'started'), 2);
    assert.equal(flows(after, 'completed') - flows(before, 'completed'), 1);
    assert.equal(flows(after, 'failed') - flows(before, 'failed'), 1);
    assert.equal(refreshes(after, 'success') - refreshes(before, 'success'), 1);
    assert.match(after, /^# TYPE mcpgate_store_errors_total counter$/m);

    const refreshed = (await upstreamRows.tokens.get(henry.sessionId, 'notes'))!;
    for (const secret of [henry.accessToken, henry.refreshToken, henry.sessionId, henry.sessionId.slice(0, 8), connected.accessToken, connected.refreshToken!, refreshed.accessToken]) {
      assert.ok(!after.includes(secret), 'a token or session id reached /metrics');
    }
  });
});
