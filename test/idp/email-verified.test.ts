/**
 * Issue 10, item 9: with `userClaim: email`, an e-mail address the IdP has not verified does not
 * name a user (at many IdPs anyone may set any address on their own account, and would then sign
 * in here as its owner). Real development IdP (`oidc-provider`) returning `email_verified: false`
 * for eve, whose address is alice's; the login endpoints on a real front door, driven as a
 * browser would.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pkcePair, registerClient, startLoginServer, type LoginServer } from '../authserver/login-server.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { createBrowser, formAction, type Page } from '../upstream-oauth/browser.ts';

let idp: DevIdp;
let server: LoginServer;

before(async () => {
  idp = await startDevIdp({
    users: [
      { login: 'alice', password: 'alice-pw', email: 'alice@example.test' },
      // Eve set alice's address on her own account; the IdP never verified it.
      { login: 'eve', password: 'eve-pw', email: 'alice@example.test', emailVerified: false },
    ],
  });
  server = await startLoginServer({ idp, userClaim: 'email' });
});
after(async () => {
  await server?.close();
  await idp?.close();
});

/** Starts an authorization request and signs in at the IdP as `login`; returns our callback's answer. */
async function authorizeAs(login: string, password: string): Promise<Page> {
  const client = await registerClient(server.issuer, { redirect_uris: ['http://127.0.0.1:41234/callback'], client_name: 'Agent' });
  const params = new URLSearchParams({
    client_id: client.client_id,
    redirect_uri: 'http://127.0.0.1:41234/callback',
    response_type: 'code',
    code_challenge: pkcePair().challenge,
    code_challenge_method: 'S256',
    state: 's',
  });
  const browser = createBrowser();
  const form = await browser.open(`${server.issuer}/oauth/authorize?${params}`);
  assert.ok(form.url.startsWith(idp.issuer), `at the IdP's login form, not ${form.url}`);
  const atCallback = (url: URL) => url.origin === server.issuer && !url.pathname.startsWith('/oauth/callback');
  return browser.submit(formAction(form, /\/login$/), { login, password }, { stopAt: (url) => atCallback(url) || url.port === '41234' });
}

describe('userClaim: email', () => {
  test('an unverified e-mail address is refused with a page that says why; no session, no code', async () => {
    const page = await authorizeAs('eve', 'eve-pw');
    assert.ok(page.url.startsWith(`${server.issuer}/oauth/callback?`), page.url);
    assert.equal(page.status, 403);
    assert.match(page.headers['content-type'] as string, /^text\/html/);
    assert.match(page.body, /has not verified the e-mail address/);
    assert.equal(page.headers.location, undefined, 'no code goes to the agent');
    assert.deepEqual(await server.stores.sessions.listForUser('alice@example.test'), []);
  });

  test('a verified address signs the user in as that address', async () => {
    const page = await authorizeAs('alice', 'alice-pw');
    assert.ok(page.status === 200 || page.status === 303, `${page.status} ${page.body.slice(0, 200)}`);
    assert.equal((await server.stores.sessions.listForUser('alice@example.test')).length, 1);
  });
});
