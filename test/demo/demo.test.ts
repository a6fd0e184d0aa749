/**
 * `npm run demo` shows the whole product (issues 4 and 5, "done when"): `startDemo()` as it runs,
 * driven by the official SDK client as the agent and Chromium as the user's browser.
 *
 * What it proves: an agent logs in through the development IdP and mcpgate's consent page and
 * calls `demo`, which receives the IdP's token for that user, never ours; the same browser
 * connects `notes` (an upstream with its own authorization server) through the auth_required
 * link, and the retried call succeeds as the upstream's user; `open` receives no credential.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { decodeJwt } from 'jose';
import type { Browser, BrowserContext } from 'playwright-core';
import { startDemo, type Demo, type WhoamiResult } from '../../demo/start.ts';
import { startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { captureLogs } from '../support/logs.ts';
import { approveAtUpstream, closeChromium, confirmConnect, connectWithLogin, createBrowserAgent, launchChromium, newBrowserContext, type BrowserUser } from '../support/browser-agent.ts';

let demo: Demo;
let browser: Browser;
let catcher: RecordingServer;
const logs = captureLogs();
const clients: Client[] = [];

before(async () => {
  [demo, catcher] = await Promise.all([startDemo({ port: 0, logLevel: 'info', logDestination: logs.destination }), startRecordingServer()]);
  browser = await launchChromium();
});

after(async () => {
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  await closeChromium(browser);
  await demo?.close();
  await catcher?.close();
});

describe('the demo: IdP login, token swap, and an upstream with its own OAuth', () => {
  let context: BrowserContext;
  let alice: BrowserUser;
  const ourTokens: string[] = [];

  test('demo: log in through the IdP and the consent page in Chromium; whoami shows the IdP user; the upstream never sees our token', async () => {
    context = await newBrowserContext(browser);
    const user = demo.idp.users.find((u) => u.login === 'alice')!;
    alice = { login: user.login, password: user.password };
    const agent = createBrowserAgent({ context, user: alice, redirectUri: `${catcher.url}/callback` });
    const { client } = await connectWithLogin(agent, demo.mcpUrls.demo);
    clients.push(client);
    assert.equal(agent.loginFormsSeen, 1);
    assert.equal(agent.consentPagesSeen, 1);

    assert.deepEqual((await client.callTool({ name: 'echo', arguments: { text: 'hello demo' } })).content, [{ type: 'text', text: 'hello demo' }]);
    const who = (await client.callTool({ name: 'whoami', arguments: {} })).structuredContent as unknown as WhoamiResult;
    assert.equal(who.verified, true, who.problem);
    assert.equal(who.sub, 'alice');
    assert.equal(who.issuer, demo.idp.issuer);

    const ours = agent.tokens()!.access_token;
    ourTokens.push(ours);
    assert.equal(decodeJwt(ours).iss, demo.publicUrl.origin);
    assert.equal(decodeJwt(ours).aud, demo.mcpUrls.demo.href);
    const seen = demo.upstream.seenRequests.map((r) => r.headers.authorization);
    assert.ok(seen.length >= 3, 'initialize, initialized and the calls reached the demo server');
    const digests = new Set<string>();
    for (const header of seen) {
      assert.match(header ?? '', /^Bearer /, 'every request to upstream demo carried a credential');
      const token = (header ?? '').slice('Bearer '.length);
      assert.notEqual(token, ours);
      assert.equal(decodeJwt(token).iss, demo.idp.issuer);
      digests.add(createHash('sha256').update(token).digest('hex').slice(0, 12));
    }
    assert.ok(digests.has(who.sha256Prefix!), 'whoami described the token the demo server received');
  });

  test('notes: the first tool call answers auth_required; the link opened in the same browser connects notes; the retry succeeds', async () => {
    // The same browser: the IdP session is there, so only mcpgate's consent (a new client) is shown.
    const agent = createBrowserAgent({ context, user: alice, redirectUri: `${catcher.url}/callback` });
    const { client } = await connectWithLogin(agent, demo.mcpUrls.notes);
    clients.push(client);
    assert.equal(agent.loginFormsSeen, 0);
    ourTokens.push(agent.tokens()!.access_token);

    const challenged = await client.callTool({ name: 'whoami', arguments: {} });
    assert.equal(challenged.isError, true);
    const required = challenged.structuredContent as { status: string; auth_url: string; server_name: string };
    assert.equal(required.status, 'auth_required');
    assert.equal(required.server_name, 'notes');
    assert.ok(required.auth_url.startsWith(`${demo.publicUrl.origin}/`), 'the link points at the gateway');

    const page = await context.newPage();
    await page.goto(required.auth_url);
    await confirmConnect(page, 'alice');
    await page.waitForURL(`${demo.notes.issuer}/**`);
    assert.ok(page.url().startsWith(demo.notes.issuer), "sent on to the notes server's own authorization server");
    await approveAtUpstream(page, 'alice-up');
    await page.waitForURL(`${demo.publicUrl.origin}/oauth/upstream/callback?**`);
    assert.equal(await page.locator('h1').textContent(), 'Connected to notes');
    await page.close();

    assert.deepEqual((await client.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'upstream user alice-up' }]);
    const seen = demo.notes.seenAuthorization.filter((h): h is string => h !== undefined);
    assert.ok(seen.length >= 1);
    for (const header of seen) assert.equal(decodeJwt(header.slice('Bearer '.length)).iss, demo.notes.issuer, 'notes sees only its own tokens');
  });

  test('open: the same login, and the demo server receives no credential', async () => {
    const before = demo.upstream.seenRequests.length;
    const agent = createBrowserAgent({ context, user: alice, redirectUri: `${catcher.url}/callback` });
    const { client } = await connectWithLogin(agent, demo.mcpUrls.open);
    clients.push(client);
    ourTokens.push(agent.tokens()!.access_token);
    const who = (await client.callTool({ name: 'whoami', arguments: {} })).structuredContent as unknown as WhoamiResult;
    assert.deepEqual(who, { credential: false, verified: false });
    assert.deepEqual(demo.upstream.seenRequests.slice(before).map((r) => r.headers.authorization).filter(Boolean), []);
  });

  test('the gateway log holds none of the tokens or passwords', () => {
    const text = logs.text();
    const secrets = [...ourTokens, demo.idp.clientSecret, ...demo.idp.users.map((u) => u.password)];
    for (const secret of secrets) assert.ok(!text.includes(secret), 'a secret reached the log');
    assert.ok(!logs.records().some((r) => r.status === 500));
  });
});
