/**
 * The browser leg in a real headless Chromium: our authorize endpoint, the development IdP's login
 * form filled like a person would, our callback, and the consent page: what it shows, that it
 * cannot be framed, that forged posts are refused, that approval is remembered per user and
 * client, and that a denial reaches the client as `access_denied`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { closeChromium, launchChromium, newBrowserContext, signInAtIdp, within } from '../support/browser-agent.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { pkcePair, registerClient, startLoginServer, startRecordingServer, type LoginServer, type RecordingServer } from '../authserver/login-server.ts';

let idp: DevIdp;
let server: LoginServer;
let agent: RecordingServer; // the agent's loopback redirect target, also a page of "another site"
let docs: RecordingServer; // publishes a client metadata document
let browser: Browser;
let clientId: string;
const forgeries = new Map<string, string>();

before(async () => {
  idp = await startDevIdp();
  server = await startLoginServer({ idp });
  agent = await startRecordingServer((_req, res, url) => {
    if (url.pathname === '/forge') {
      // Another origin that somehow learnt a consent id and token posts the form itself.
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(forgeries.get(url.searchParams.get('id') ?? '') ?? '');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('Signed in. You can close this window.');
  });
  docs = await startRecordingServer((_req, res, url) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ client_id: `${docs.url}${url.pathname}`, client_name: 'Doc Agent', redirect_uris: ['http://127.0.0.1/callback'] }));
  });
  clientId = (await registerClient(server.issuer, { redirect_uris: ['http://127.0.0.1/callback'], client_name: 'Test Agent' })).client_id;
  browser = await launchChromium();
});
after(async () => {
  await closeChromium(browser);
  await server?.close();
  await agent?.close();
  await docs?.close();
  await idp?.close();
});

function authorizeUrl(state: string, id = clientId): string {
  const params = new URLSearchParams({
    client_id: id,
    redirect_uri: `${agent.url}/callback`,
    response_type: 'code',
    code_challenge: pkcePair().challenge,
    code_challenge_method: 'S256',
    state,
    scope: 'mcp',
    resource: server.resource('kube'),
  });
  return `${server.issuer}/oauth/authorize?${params}`;
}

/** Opens the authorize URL and signs in at the IdP form when it appears. Resolves with our callback's response. */
async function signIn(page: Page, url: string, login?: { user: string; password: string }) {
  const callback = page.waitForResponse((r) => r.url().startsWith(`${server.issuer}/oauth/callback`));
  await page.goto(url);
  if (login) await signInAtIdp(page, { login: login.user, password: login.password });
  return callback;
}

/**
 * Clicks a consent button and resolves with the request the client's redirect URI received, once
 * the tab has loaded it (a tab or context closed mid-navigation can hang Chromium's close).
 */
async function answerConsent(page: Page, button: 'approve' | 'deny'): Promise<URL> {
  const arrived = agent.next('/callback');
  await page.click(`button[value="${button}"]`);
  await page.waitForURL((u) => u.href.startsWith(`${agent.url}/callback`));
  return within("the client's redirect URI to be called", arrived);
}

const alice = () => ({ user: 'alice', password: idp.users.find((u) => u.login === 'alice')!.password });
const bob = () => ({ user: 'bob', password: idp.users.find((u) => u.login === 'bob')!.password });

describe('consent in a real browser', () => {
  let context: BrowserContext;
  let page: Page;
  before(async () => {
    context = await newBrowserContext(browser);
    page = await context.newPage();
  });
  after(() => (context ? within('a browser context to close', context.close()) : undefined));

  test('the IdP login leads to a consent page naming the client, its redirect host and the loopback warning', async () => {
    const response = await signIn(page, authorizeUrl('state-approve'), alice());
    assert.equal(response.status(), 200);
    const headers = response.headers();
    assert.match(headers['content-security-policy'] ?? '', /frame-ancestors 'none'/);
    assert.match(headers['content-security-policy'] ?? '', /default-src 'none'/);
    assert.match(headers['content-security-policy'] ?? '', /form-action 'self'/);
    assert.equal(headers['x-frame-options'], 'DENY');
    assert.equal(headers['cache-control'], 'no-store');

    const text = await page.locator('main').innerText();
    assert.match(await page.title(), /Test Agent/);
    assert.match(text, /“Test Agent”/);
    assert.match(text, /not verified/);
    assert.equal(await page.locator('#redirect-host').innerText(), `127.0.0.1:${agent.port}`);
    assert.match(await page.locator('#loopback-warning').innerText(), /This app runs on your computer/);
    assert.match(text, /signed in as Alice \(alice@example\.test\)/);
    assert.match(text, /mcp: Use the MCP servers/);
    assert.match(text, new RegExp(server.resource('kube').replace(/[.]/g, '\\.')));
    assert.equal(await page.locator('button[value="approve"]').count(), 1);
    assert.equal(await page.locator('button[value="deny"]').count(), 1);
  });

  test('our login cookie and the CSRF cookie are HttpOnly and SameSite=Lax (no __Host- prefix on http)', async () => {
    const cookies = await context.cookies(server.issuer);
    const login = cookies.find((c) => c.name === 'mcpgate-login');
    const csrf = cookies.find((c) => c.name === 'mcpgate-csrf');
    assert.ok(login && csrf, JSON.stringify(cookies.map((c) => c.name)));
    for (const cookie of [login, csrf]) {
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.sameSite, 'Lax');
      assert.equal(cookie.path, '/');
    }
    assert.equal(login.expires, -1, 'a browser-session cookie');
  });

  test('forged posts are refused with 403 and do not use up the real request', async () => {
    const consentId = await page.inputValue('input[name="consent_id"]');
    const csrf = await page.inputValue('input[name="csrf"]');
    const cookie = (await context.cookies(server.issuer)).map((c) => `${c.name}=${c.value}`).join('; ');
    const post = (form: Record<string, string>, headers: Record<string, string> = {}) =>
      fetch(`${server.issuer}/oauth/consent`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: new URLSearchParams(form),
      });

    const noToken = await post({ consent_id: consentId, decision: 'approve' }, { cookie });
    assert.equal(noToken.status, 403);
    assert.match(noToken.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(noToken.headers.get('x-frame-options'), 'DENY');
    assert.equal((await post({ consent_id: consentId, csrf: `${csrf.slice(0, -2)}AA`, decision: 'approve' }, { cookie })).status, 403);
    assert.equal((await post({ consent_id: consentId, csrf, decision: 'approve' })).status, 403, 'the token is bound to this browser');
    assert.equal((await post({ consent_id: consentId, csrf, decision: 'approve' }, { cookie, origin: 'https://evil.example' })).status, 403);
    assert.equal((await post({ consent_id: consentId, csrf, decision: 'approve' }, { cookie, 'sec-fetch-site': 'cross-site' })).status, 403);

    // The same from another origin in the browser itself: its cookies go along (same site), its Origin gives it away.
    forgeries.set(
      consentId,
      `<!doctype html><form id="f" method="post" action="${server.issuer}/oauth/consent">
<input name="consent_id" value="${consentId}"><input name="csrf" value="${csrf}"><input name="decision" value="approve"></form>
<script>document.getElementById('f').submit()</script>`,
    );
    const attacker = await context.newPage();
    const forged = attacker.waitForResponse((r) => r.url() === `${server.issuer}/oauth/consent`);
    await attacker.goto(`${agent.url}/forge?id=${encodeURIComponent(consentId)}`);
    assert.equal((await forged).status(), 403);
    assert.match(await attacker.locator('main').innerText(), /another site/);
    await attacker.waitForLoadState('load'); // never close a tab mid-navigation
    await attacker.close();
    assert.equal(agent.requests.filter((u) => u.pathname === '/callback').length, 0, 'no code was sent anywhere');
  });

  test('approving sends the code, the state and iss to the client; the code is bound to the request', async () => {
    const callback = await answerConsent(page, 'approve');
    assert.equal(callback.searchParams.get('state'), 'state-approve');
    assert.equal(callback.searchParams.get('iss'), server.issuer);
    assert.equal(callback.searchParams.get('error'), null);
    const code = callback.searchParams.get('code')!;
    const consumed = await server.stores.codes.consume(code);
    assert.ok(consumed && !consumed.reused);
    assert.equal(consumed.record.subject, 'alice');
    assert.equal(consumed.record.clientId, clientId);
    assert.equal(consumed.record.redirectUri, `${agent.url}/callback`);
    assert.equal(consumed.record.resource, server.resource('kube'));
    assert.deepEqual(consumed.record.scopes, ['mcp']);
    const session = await server.stores.sessions.get(consumed.record.sessionId);
    assert.equal(session?.subject, 'alice');
    assert.ok(session!.expiresAt - server.now() > 29 * 86_400_000, 'the session lives as long as a session, not as long as the page');
    const tokens = await server.stores.idpTokens.get(consumed.record.sessionId);
    assert.ok(tokens?.accessToken && tokens.refreshToken && tokens.idToken, 'the IdP tokens are kept server-side');
    assert.deepEqual((await server.stores.consents.get('alice', clientId))?.scopes, ['mcp']);
    const names = (await context.cookies(server.issuer)).map((c) => c.name);
    assert.ok(names.includes('mcpgate-consent'));
    assert.ok(!names.includes('mcpgate-csrf'), 'the CSRF cookie is cleared once used');
  });

  test('the approval is remembered for this user and client: the next login goes straight back with a code', async () => {
    const arrived = agent.next('/callback');
    const response = await signIn(page, authorizeUrl('state-again')); // the IdP session skips its form too
    assert.equal(response.status(), 303);
    await page.waitForURL((u) => u.href.startsWith(`${agent.url}/callback`));
    const callback = await within("the client's redirect URI to be called", arrived);
    assert.equal(callback.searchParams.get('state'), 'state-again');
    assert.ok(callback.searchParams.get('code'));
  });

  test('another site cannot frame our pages', async () => {
    forgeries.set('frame', `<!doctype html><iframe id="f" src="${server.issuer}/oauth/authorize?client_id=unknown"></iframe>`);
    const attacker = await context.newPage();
    const framed = attacker.waitForResponse((r) => r.url().startsWith(`${server.issuer}/oauth/authorize`));
    await attacker.goto(`${agent.url}/forge?id=frame`);
    assert.equal((await framed).headers()['x-frame-options'], 'DENY');
    const frame = attacker.frames().find((f) => f !== attacker.mainFrame())!;
    await frame.waitForLoadState();
    assert.ok(!(await frame.content()).includes('Sign-in failed'), 'the browser refused to render the framed page');
    await attacker.waitForLoadState('load'); // never close a tab mid-navigation
    await attacker.close();
  });

  test('a posted consent page cannot be answered twice', async () => {
    const res = await fetch(`${server.issuer}/oauth/consent`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'consent_id=x&csrf=y' });
    assert.equal(res.status, 403);
  });
});

describe('per user, denial, metadata documents', () => {
  let context: BrowserContext;
  let page: Page;
  before(async () => {
    context = await newBrowserContext(browser);
    page = await context.newPage();
  });
  after(() => (context ? within('a browser context to close', context.close()) : undefined));

  test("another user must consent on their own, and a denial returns access_denied to the client", async () => {
    const response = await signIn(page, authorizeUrl('state-deny'), bob());
    assert.equal(response.status(), 200, 'bob sees the consent page although alice approved this client');
    assert.match(await page.locator('main').innerText(), /signed in as Bob/);
    const callback = await answerConsent(page, 'deny');
    assert.equal(callback.searchParams.get('error'), 'access_denied');
    assert.equal(callback.searchParams.get('state'), 'state-deny');
    assert.equal(callback.searchParams.get('iss'), server.issuer);
    assert.equal(callback.searchParams.get('code'), null);
    assert.deepEqual(await server.stores.sessions.listForUser('bob'), [], 'the provisional session is gone');
    assert.equal(await server.stores.consents.get('bob', clientId), undefined);
  });

  test('a metadata-document client is named by its verified host', async () => {
    const docClient = `${docs.url}/clients/agent.json`;
    const response = await signIn(page, authorizeUrl('state-doc', docClient)); // bob's IdP session is still open
    assert.equal(response.status(), 200);
    assert.match(await page.title(), new RegExp(`Allow 127\\.0\\.0\\.1:${docs.port}`));
    const text = await page.locator('main').innerText();
    assert.match(text, /“Doc Agent”/);
    assert.match(text, new RegExp(docClient.replace(/[.]/g, '\\.')));
    assert.ok((await answerConsent(page, 'approve')).searchParams.get('code'));
  });

  test('nothing secret reached the log, and nothing answered 500', () => {
    const text = server.logs.text();
    for (const secret of [idp.clientSecret, ...idp.users.map((u) => u.password), 'state-approve', 'state-deny']) {
      assert.ok(!text.includes(secret), `the log holds ${secret}`);
    }
    assert.ok(!server.logs.records().some((r) => r.status === 500));
  });
});
