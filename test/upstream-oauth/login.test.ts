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
import { createAuthStores } from '../../src/authserver/stores.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { approveAtUpstream, closeChromium, connectWithLogin, createBrowserAgent, launchChromium, newBrowserContext, signInAtIdp } from '../support/browser-agent.ts';
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
      assert.ok(page.url().startsWith(upstream.issuer), 'sent on to the upstream\'s own authorization server');
      await approveAtUpstream(page, 'alice-up');
      await page.waitForURL(`${gateway}/oauth/upstream/callback?**`);
      assert.equal(await page.locator('h1').textContent(), 'Connected to notes');

      assert.deepEqual((await client.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'upstream user alice-up' }]);

      // Disconnected, then connected again from another browser (no login cookie): /connect signs
      // it in through the IdP, and connects Alice's one agent session.
      const removed = await fetch(`${gateway}/connections/notes`, { method: 'DELETE', headers: { authorization: `Bearer ${agent.tokens()!.access_token}` } });
      assert.equal(removed.status, 200);
      const elsewhere = await (await newBrowserContext(browser)).newPage();
      await elsewhere.goto(`${gateway}/connect/notes`);
      await signInAtIdp(elsewhere, userOf('alice'));
      await elsewhere.waitForURL(`${upstream.issuer}/**`);
      await approveAtUpstream(elsewhere, 'alice-up');
      await elsewhere.waitForURL(`${gateway}/oauth/upstream/callback?**`);
      assert.equal(await elsewhere.locator('h1').textContent(), 'Connected to notes');
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
});
