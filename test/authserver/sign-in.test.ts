/**
 * `GET /oauth/login?return_to=…` (sign-in.ts) against a real development IdP, driven as a browser
 * would with plain HTTP and a cookie jar: only our own paths are accepted, the IdP login ends in
 * our login cookie (the user, no session) and a redirect back, nothing else is created, and the
 * parked sign-in is single use.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ourReturnPath } from '../../src/authserver/login/sign-in.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { createBrowser, formAction, type Browser, type Page } from '../upstream-oauth/browser.ts';
import { startLoginServer, type LoginServer } from './login-server.ts';

let idp: DevIdp;
let server: LoginServer;

before(async () => {
  idp = await startDevIdp();
  server = await startLoginServer({ idp });
});
after(async () => {
  await server?.close();
  await idp?.close();
});

const signInUrl = (returnTo: string) => `${server.issuer}/oauth/login?${new URLSearchParams({ return_to: returnTo })}`;

/** Opens the sign-in link and logs in at the IdP as `login`; stops before the browser goes back to `return_to`. */
async function signIn(browser: Browser, returnTo: string, login = 'alice'): Promise<Page> {
  const form = await browser.open(signInUrl(returnTo));
  assert.ok(form.url.startsWith(idp.issuer), `at the IdP's login form, not ${form.url} (${form.status})`);
  const password = idp.users.find((u) => u.login === login)!.password;
  const backHome = (url: URL) => url.origin === server.issuer && !url.pathname.startsWith('/oauth/callback');
  return browser.submit(formAction(form, /\/login$/), { login, password }, { stopAt: backHome });
}

/** The payload of our login cookie in a Set-Cookie header. */
function loginCookiePayload(page: Page): Record<string, unknown> {
  const lines = ([] as string[]).concat(page.headers['set-cookie'] ?? []);
  const line = lines.find((l) => l.startsWith('mcpgate-login='));
  assert.ok(line, 'our login cookie is set');
  assert.match(line, /HttpOnly/);
  assert.match(line, /SameSite=Lax/);
  const value = line.split(';')[0]!.slice('mcpgate-login='.length);
  return JSON.parse(Buffer.from(value.split('.')[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

describe('GET /oauth/login', () => {
  test('only our own paths are accepted as return_to; anything else is an error page and no redirect', async () => {
    for (const bad of [null, '', 'connect/notes', '//evil.example/x', '/\\evil.example', 'https://evil.example/', '/connect/notes x', '/a\tb', '/oauth/login?return_to=/x', `/${'a'.repeat(2100)}`]) {
      const url = bad === null ? `${server.issuer}/oauth/login` : signInUrl(bad);
      const res = await fetch(url, { redirect: 'manual' });
      assert.equal(res.status, 400, `return_to ${JSON.stringify(bad)}`);
      assert.equal(res.headers.get('location'), null);
      assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
      assert.match(await res.text(), /outside this service|does not say where/);
    }
    const twice = await fetch(`${server.issuer}/oauth/login?return_to=/a&return_to=/b`, { redirect: 'manual' });
    assert.equal(twice.status, 400);
  });

  test('under a public URL with a path, only paths under it', () => {
    assert.equal(ourReturnPath('/gw/connect/notes', 'https://mcp.example.com/gw'), '/gw/connect/notes');
    assert.equal(ourReturnPath('/gw?x=1', 'https://mcp.example.com/gw'), '/gw?x=1');
    assert.equal(ourReturnPath('/connect/notes', 'https://mcp.example.com/gw'), undefined);
    assert.equal(ourReturnPath('/gwx/connect', 'https://mcp.example.com/gw'), undefined);
    assert.equal(ourReturnPath('/gw/oauth/login', 'https://mcp.example.com/gw'), undefined);
  });

  test('the IdP login sets our login cookie naming the user (no session) and returns the browser; nothing else is created', async () => {
    const returnTo = '/oauth/upstream/start?flow=abc';
    const browser = createBrowser();
    const back = await signIn(browser, returnTo);
    assert.equal(back.status, 303);
    assert.equal(back.headers.location, `${server.issuer}${returnTo}`);
    assert.ok(back.url.startsWith(`${server.issuer}/oauth/callback?`));
    const payload = loginCookiePayload(back);
    assert.equal(payload.sub, 'alice');
    assert.equal(payload.sid, undefined, 'a sign-in creates no session');
    assert.deepEqual(await server.stores.sessions.listForUser('alice'), []);

    // The callback URL cannot be used twice, and is refused outright in a browser that did not start it.
    const replay = await browser.open(back.url);
    assert.equal(replay.status, 400);
    assert.match(replay.body, /expired or was already completed/);
    const elsewhere = await createBrowser().open(back.url);
    assert.equal(elsewhere.status, 403);
    assert.match(elsewhere.body, /not started in this browser/);
  });

  test('a sign-in declined at the IdP ends on an error page, not at return_to', async () => {
    const start = await fetch(signInUrl('/connect/notes'), { redirect: 'manual' });
    assert.equal(start.status, 302);
    const state = new URL(start.headers.get('location')!).searchParams.get('state')!;
    assert.ok(state.startsWith('si.'));
    const cookie = start.headers.getSetCookie().map((c) => c.split(';')[0]!).join('; ');
    const denied = await fetch(`${server.issuer}/oauth/callback?${new URLSearchParams({ state, error: 'access_denied', iss: idp.issuer })}`, { redirect: 'manual', headers: { cookie } });
    assert.equal(denied.status, 403);
    assert.equal(denied.headers.get('location'), null);
    assert.equal(denied.headers.get('set-cookie'), null);
  });

  test('no secret in the log', () => {
    const text = server.logs.text();
    for (const user of idp.users) assert.ok(!text.includes(user.password));
    assert.ok(!/si\.[A-Za-z0-9_-]{20}/.test(text), 'a sign-in state was logged');
  });
});
