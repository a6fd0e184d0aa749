/**
 * Mode `oauth` after the real login, nothing stubbed: the SDK client is the agent (its own OAuth
 * against our authorization server), Chromium is the user's browser (our consent page, the company
 * IdP's login form, then the upstream's own authorization server), `oidc-provider` plays both the
 * company IdP and — a second, unrelated instance — the upstream's own authorization server.
 *
 * What it proves: the login cookie our IdP callback sets is what lets the same browser complete
 * the upstream link; a browser without it signs in through the IdP first (`/oauth/login`) and
 * comes back — refused when it turns out to be another user, connected when it is the user; the
 * upstream sees only tokens of its own authorization server — never ours, never the company IdP's.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import type { Browser } from 'playwright-core';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { pkcePair, registerClient, startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { createBrowser, formAction } from './browser.ts';
import { approveAtUpstream, closeChromium, confirmConnect, connectWithLogin, createBrowserAgent, launchChromium, newBrowserContext, signInAtIdp } from '../support/browser-agent.ts';
import { startGateway } from '../support/gateway.ts';
import type { App } from '../../src/app.ts';
import type { LogCapture } from '../support/logs.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';

let idp: DevIdp;
let upstream: UpstreamWithAs;
let app: App;
let gateway: string;
let browser: Browser;
let catcher: RecordingServer;
let logs: LogCapture;
const storeKey = randomBytes(32);
const store = createMemoryStore();
const stores = createAuthStores({ store, sealer: createSealer({ keys: [{ id: 'k1', key: storeKey }] }) });

before(async () => {
  [idp, upstream, catcher] = await Promise.all([startDevIdp(), startUpstreamWithAs({ registration: 'dcr', openHandshake: true }), startRecordingServer()]);
  const started = await startGateway({
    idp,
    storeKey,
    store,
    server: { drainTimeout: '1s', logLevel: 'debug' },
    upstreams: [{ name: 'notes', url: upstream.mcpUrl, auth: { mode: 'oauth', scopes: ['notes:read'], challenge: 'tool_result' } }],
  });
  ({ app, logs } = started);
  gateway = started.url.origin;
  browser = await launchChromium();
});

after(async () => {
  await closeChromium(browser);
  await app?.close();
  await Promise.all([upstream?.close(), catcher?.close(), idp?.close()]);
});

const userOf = (login: string) => {
  const user = idp.users.find((u) => u.login === login)!;
  return { login: user.login, password: user.password };
};

describe('mode oauth after the real login (SDK agent, Chromium, two unrelated OpenID providers)', () => {
  test('log in through the IdP, get the auth_url, complete it in the same browser, call the upstream as the upstream user', async () => {
    const context = await newBrowserContext(browser);
    const agent = createBrowserAgent({ context, user: userOf('alice'), redirectUri: `${catcher.url}/callback`, clientName: 'Upstream OAuth e2e agent' });
    const { client } = await connectWithLogin(agent, new URL(`${gateway}/notes/mcp`));
    assert.equal(agent.loginFormsSeen, 1);
    assert.equal(agent.consentPagesSeen, 1);
    try {
      const challenged = await client.callTool({ name: 'whoami', arguments: {} });
      const required = challenged.structuredContent as { status: string; auth_url: string };
      assert.equal(challenged.isError, true);
      assert.equal(required.status, 'auth_required');

      // A browser that never signed in to mcpgate signs in first; it is Bob's, so it is refused, and the flow survives.
      const stranger = await (await newBrowserContext(browser)).newPage();
      await stranger.goto(required.auth_url);
      assert.ok(stranger.url().startsWith(idp.issuer), 'sent to sign in at the company IdP');
      await signInAtIdp(stranger, userOf('bob'));
      await stranger.waitForURL(`${gateway}/oauth/upstream/start?**`);
      assert.equal(await stranger.locator('h1').textContent(), 'This link is for another user');

      // The user's own browser carries the login cookie our IdP callback set.
      const page = await context.newPage();
      await page.goto(required.auth_url);
      await confirmConnect(page, 'alice');
      await page.waitForURL(`${upstream.issuer}/**`);
      assert.ok(page.url().startsWith(upstream.issuer), 'sent on to the upstream\'s own authorization server');
      await approveAtUpstream(page, 'alice-up');
      await page.waitForURL(`${gateway}/oauth/upstream/callback?**`);
      assert.equal(await page.locator('h1').textContent(), 'Connected to notes');

      assert.deepEqual((await client.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'upstream user alice-up' }]);

      // Disconnected; another browser (no login cookie) that opens /connect signs in through the
      // IdP, but its sign-in names no agent session, so none is picked for it: nothing connected.
      const removed = await fetch(`${gateway}/connections/notes`, { method: 'DELETE', headers: { authorization: `Bearer ${agent.tokens()!.access_token}` } });
      assert.equal(removed.status, 200);
      const elsewhere = await (await newBrowserContext(browser)).newPage();
      await elsewhere.goto(`${gateway}/connect/notes`);
      await signInAtIdp(elsewhere, userOf('alice'));
      await elsewhere.waitForURL(`${gateway}/connect/notes`);
      assert.equal(await elsewhere.locator('h1').textContent(), 'Connect from your agent');
      // The browser the agent signed in with connects again through /connect, after one click.
      const again = await context.newPage();
      await again.goto(`${gateway}/connect/notes`);
      await confirmConnect(again, 'alice');
      // This browser still has its session at the upstream's server: it may skip the login form there.
      const atUpstream = await again.waitForSelector(`input[name="login"], button[value="approve"], h1:text("Connected to notes")`);
      if ((await atUpstream.getAttribute('name')) === 'login') await approveAtUpstream(again, 'alice-up');
      else if ((await atUpstream.getAttribute('value')) === 'approve') await again.click('button[value="approve"]');
      await again.waitForURL(`${gateway}/oauth/upstream/callback?**`);
      assert.equal(await again.locator('h1').textContent(), 'Connected to notes');
      assert.deepEqual((await client.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'upstream user alice-up' }]);
    } finally {
      await client.close();
    }

    const ours = agent.tokens()!.access_token;
    const idpTokens = await stores.idpTokens.get(String(decodeJwt(ours).sid));
    assert.ok(idpTokens, 'the session holds the company IdP tokens');
    const seen = upstream.seenAuthorization.filter((h): h is string => h !== undefined);
    assert.ok(seen.length >= 1);
    for (const header of seen) {
      assert.notEqual(header, `Bearer ${ours}`);
      assert.notEqual(header, `Bearer ${idpTokens.accessToken}`);
      assert.equal(decodeJwt(header.slice('Bearer '.length)).iss, upstream.issuer);
    }
    const text = logs.text();
    for (const secret of [ours, idpTokens.accessToken, ...seen.map((h) => h.slice(7))]) assert.ok(!text.includes(secret), 'a token reached the log');
  });

  test('login CSRF: a callback URL the attacker stopped at is refused in the victim\'s browser, which is never signed in as the attacker', async () => {
    // The attacker starts a sign-in that would return to /connect/notes (and, the second time,
    // an authorization of his own client), signs in at the IdP as himself, and stops before the
    // IdP's redirect back reaches the gateway: he keeps the callback URL.
    const attacker = createBrowser();
    const atCallback = { stopAt: (url: URL) => url.pathname === '/oauth/callback' };
    const stolenFrom = async (url: string): Promise<string> => {
      let page = await attacker.open(url, atCallback);
      if (page.status === 200) page = await attacker.submit(formAction(page, /\/login$/), userOf('bob'), atCallback);
      assert.ok(page.status >= 300 && page.status < 400, `stopped before the callback: ${page.status} ${page.url}`);
      const callback = new URL(String(page.headers.location), page.url);
      assert.equal(callback.pathname, '/oauth/callback');
      return callback.href;
    };
    const stolen = [await stolenFrom(`${gateway}/oauth/login?return_to=${encodeURIComponent('/connect/notes')}`)];

    // The victim, signed in at the upstream's own server (it would approve silently), opens the link.
    const victimContext = await newBrowserContext(browser);
    const victim = await victimContext.newPage();
    const answer = await victim.goto(stolen[0]!);
    assert.equal(answer?.status(), 403);
    assert.match((await victim.locator('main').textContent()) ?? '', /not started in this browser/);
    assert.equal(victim.url().startsWith(`${gateway}/oauth/callback`), true, 'the browser went nowhere else');
    const cookies = await victimContext.cookies(gateway);
    assert.deepEqual(cookies.filter((c) => c.name.includes('mcpgate-login')), [], 'never signed in as the attacker');
    assert.deepEqual(await stores.sessions.listForUser('bob'), [], 'no session of the attacker holds anything');

    // The same holds for the callback of an authorization request (our /oauth/authorize) of the attacker's own client.
    const client = await registerClient(gateway, { redirect_uris: [`${catcher.url}/attacker`], token_endpoint_auth_method: 'none', client_name: 'Attacker' });
    const authorize = new URL(`${gateway}/oauth/authorize`);
    for (const [k, v] of Object.entries({ response_type: 'code', client_id: client.client_id, redirect_uri: `${catcher.url}/attacker`, code_challenge: pkcePair().challenge, code_challenge_method: 'S256', resource: `${gateway}/notes/mcp`, state: 'x' })) {
      authorize.searchParams.set(k, v);
    }
    stolen.push(await stolenFrom(authorize.href));
    const second = await victim.goto(stolen[1]!);
    assert.equal(second?.status(), 403);
    assert.match((await victim.locator('main').textContent()) ?? '', /not started in this browser/);
    assert.deepEqual((await victimContext.cookies(gateway)).filter((c) => c.name.includes('mcpgate-login')), []);
    assert.equal(catcher.requests.filter((u) => u.pathname === '/attacker').length, 0, 'no code was issued for the victim\'s browser');
    await victimContext.close();
  });

  test('login CSRF through the attacker\'s own upstream flow: return_to=/oauth/upstream/start?flow=… is refused at the callback, nothing is connected for him', async () => {
    // The attacker's agent signs in as him and is asked to connect: he now holds a flow of his own.
    const attackerAgent = createBrowserAgent({ context: await newBrowserContext(browser), user: userOf('bob'), redirectUri: `${catcher.url}/callback`, clientName: 'Attacker agent' });
    const { client } = await connectWithLogin(attackerAgent, new URL(`${gateway}/notes/mcp`));
    try {
      const required = (await client.callTool({ name: 'whoami', arguments: {} })).structuredContent as { status: string; auth_url: string };
      assert.equal(required.status, 'auth_required');
      const flowStart = new URL(required.auth_url);
      assert.equal(flowStart.pathname, '/oauth/upstream/start');

      // He signs in as himself with that flow as the place to return to, and stops at our callback.
      const attacker = createBrowser();
      const atCallback = { stopAt: (url: URL) => url.pathname === '/oauth/callback' };
      let page = await attacker.open(`${gateway}/oauth/login?return_to=${encodeURIComponent(flowStart.pathname + flowStart.search)}`, atCallback);
      if (page.status === 200) page = await attacker.submit(formAction(page, /\/login$/), userOf('bob'), atCallback);
      assert.ok(page.status >= 300 && page.status < 400, `stopped before the callback: ${page.status} ${page.url}`);
      const stolen = new URL(String(page.headers.location), page.url);
      assert.equal(stolen.pathname, '/oauth/callback');

      // The victim's browser opens it: refused before it returns anywhere.
      const victimContext = await newBrowserContext(browser);
      const victim = await victimContext.newPage();
      const answer = await victim.goto(stolen.href);
      assert.equal(answer?.status(), 403);
      assert.match((await victim.locator('main').textContent()) ?? '', /not started in this browser/);
      assert.ok(victim.url().startsWith(`${gateway}/oauth/callback`), 'never sent on to the flow or the upstream');
      assert.deepEqual((await victimContext.cookies(gateway)).filter((c) => c.name.includes('mcpgate-login')), [], 'never signed in as the attacker');
      await victimContext.close();

      // The attacker's session holds no upstream grant: his agent is still asked to connect.
      const after = (await client.callTool({ name: 'whoami', arguments: {} })).structuredContent as { status: string };
      assert.equal(after.status, 'auth_required');
    } finally {
      await client.close();
    }
  });
});
