/**
 * Security review item 5: a user disabled at the company IdP must lose access, and no session
 * lives for ever. A real OpenID provider (`oidc-provider`, the development IdP) issues the IdP
 * tokens through a real login; the upstream is in mode `none`, so nothing but our refresh grant
 * ever asks the IdP again. The gateway's clock is fake: "the IdP access token expired" and "a
 * week later" are clock moves.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import type { IdpTokens } from '../../src/authserver/records/records.ts';
import { createOidcIdpClient } from '../../src/idp/oidc.ts';
import type { IdpClient } from '../../src/idp/types.ts';
import { login, postForm, registerClient, startAuthGateway, type AuthGateway } from './fixture.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';
import { createBrowser, formAction } from '../upstream-oauth/browser.ts';

const HOUR = 3_600_000;
let idp: DevIdp;
let idpClient: IdpClient;
let gw: AuthGateway;
let upstream: RawUpstream;
let client: Awaited<ReturnType<typeof registerClient>>;

before(async () => {
  idp = await startDevIdp({ accessTokenTtlSeconds: 300 });
  upstream = await startRawUpstream();
  gw = await startAuthGateway({
    upstreams: [{ name: 'notes', url: upstream.url, auth: { mode: 'none' } }],
    // A refresh slides the session one day; no session lives past three days from its login.
    authServer: { refreshTokenTtl: '1d', sessionMaxLifetime: '3d' },
    idpClient: (now) => {
      idpClient = createOidcIdpClient({
        config: { issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret, scopes: ['openid', 'profile', 'email', 'offline_access'], userClaim: 'sub', authParams: {} },
        redirectUri: 'http://127.0.0.1:9/oauth/callback',
        devMode: true,
        now,
      });
      return idpClient;
    },
  });
  client = await registerClient(gw);
});
after(async () => {
  await gw?.close();
  await upstream?.close();
  await idp?.close();
});

/** A real login at the development IdP, as `/oauth/callback` performs it: returns the IdP's tokens. */
async function idpLogin(who: 'alice' | 'bob'): Promise<IdpTokens> {
  const user = idp.users.find((u) => u.login === who)!;
  const state = randomBytes(16).toString('base64url');
  const start = await idpClient.startLogin(state);
  const browser = createBrowser();
  const form = await browser.open(start.url);
  const done = await browser.submit(formAction(form, /\/login$/), { login: user.login, password: user.password }, { stopAt: (url) => url.pathname === '/oauth/callback' });
  const result = await idpClient.finishLogin(new URL(String(done.headers.location), done.url), { state, codeVerifier: start.codeVerifier, nonce: start.nonce });
  assert.ok(result.tokens.refreshToken, 'offline_access gave a refresh token');
  return result.tokens;
}

async function session(who: 'alice' | 'bob') {
  const idpTokens = await idpLogin(who);
  // The session and its IdP tokens as the callback leaves them (lifetime: min(refreshTokenTtl, sessionMaxLifetime)).
  const ours = await login(gw, client, { resource: gw.resource('notes'), subject: who, idpTokens });
  const stored = (await gw.stores.sessions.get(ours.sessionId))!;
  await gw.stores.sessions.revoke(ours.sessionId);
  await gw.stores.sessions.put({ ...stored, expiresAt: stored.createdAt + 86_400_000 });
  await gw.stores.idpTokens.put(ours.sessionId, idpTokens, 86_400_000);
  return ours;
}

const refresh = (refreshToken: string) => postForm(`${gw.issuer}/oauth/token`, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: refreshToken });

async function callUpstream(accessToken: string): Promise<number> {
  const res = await fetch(`${gw.url}notes/mcp`, {
    method: 'POST',
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json' },
    body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
  });
  await res.arrayBuffer();
  return res.status;
}

/** Moves the gateway clock past the session's IdP access-token expiry. */
async function pastIdpExpiry(sessionId: string): Promise<void> {
  const tokens = (await gw.stores.idpTokens.get(sessionId))!;
  gw.advance(tokens.expiresAt! + 1000 - gw.now());
}

/** RFC 7009 at the IdP: what an administrator's "revoke the user's sessions" does to our grant. */
async function revokeAtIdp(refreshToken: string): Promise<void> {
  const metadata = (await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json()) as { revocation_endpoint: string };
  const res = await postForm(metadata.revocation_endpoint, { token: refreshToken, token_type_hint: 'refresh_token', client_id: idp.clientId, client_secret: idp.clientSecret });
  assert.equal(res.status, 200, JSON.stringify(res.body));
}

test('a grant revoked at the IdP ends the session at our next refresh once the IdP access token has expired', async () => {
  const alice = await session('alice');
  const refreshesBefore = idp.refreshCount();
  // While the IdP access token is valid, our refresh does not call the IdP.
  const first = await refresh(alice.refreshToken);
  assert.equal(first.status, 200, JSON.stringify(first.body));
  assert.equal(idp.refreshCount(), refreshesBefore);
  // Once it has expired, our refresh refreshes the IdP grant first.
  await pastIdpExpiry(alice.sessionId);
  const second = await refresh(String(first.body.refresh_token));
  assert.equal(second.status, 200, JSON.stringify(second.body));
  assert.equal(idp.refreshCount(), refreshesBefore + 1, 'the IdP was asked');

  // The administrator disables the user: the IdP grant is revoked there.
  await revokeAtIdp((await gw.stores.idpTokens.get(alice.sessionId))!.refreshToken!);
  await pastIdpExpiry(alice.sessionId);
  const refused = await refresh(String(second.body.refresh_token));
  assert.equal(refused.status, 400, JSON.stringify(refused.body));
  assert.equal(refused.body.error, 'invalid_grant');
  assert.match(String(refused.body.error_description), /identity provider/);
  assert.equal(await gw.stores.sessions.get(alice.sessionId), undefined, 'the session is gone');
  assert.equal(await callUpstream(String(second.body.access_token)), 401, 'its access token no longer works either');
});

test('an IdP outage is not a logout: 503 temporarily_unavailable, the refresh token stays unspent', async () => {
  const bob = await session('bob');
  await pastIdpExpiry(bob.sessionId);
  idp.failRefresh('down');
  try {
    const res = await refresh(bob.refreshToken);
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.error, 'temporarily_unavailable');
    assert.ok(Number(res.headers.get('retry-after')) > 0);
    assert.ok(await gw.stores.sessions.get(bob.sessionId), 'the session is kept');
  } finally {
    idp.failRefresh(null);
  }
  const retried = await refresh(bob.refreshToken);
  assert.equal(retried.status, 200, JSON.stringify(retried.body));
});

test('sessionMaxLifetime: refreshes slide a session, never past its absolute end', async () => {
  // The client registration (one day in the fixture) must outlive the three days.
  await gw.stores.clients.put((await gw.stores.clients.get(client.clientId))!, 30 * 86_400_000);
  const alice = await session('alice');
  const createdAt = (await gw.stores.sessions.get(alice.sessionId))!.createdAt;
  let refreshToken = alice.refreshToken;
  let accessToken = alice.accessToken;
  // A refresh every 20 hours keeps a one-day session alive, up to three days after the login.
  for (const at of [20, 40, 60]) {
    gw.advance(createdAt + at * HOUR - gw.now());
    const res = await refresh(refreshToken);
    assert.equal(res.status, 200, `refresh at +${at}h: ${JSON.stringify(res.body)}`);
    refreshToken = String(res.body.refresh_token);
    accessToken = String(res.body.access_token);
    const expected = Math.min(gw.now() + 24 * HOUR, createdAt + 72 * HOUR);
    assert.equal((await gw.stores.sessions.get(alice.sessionId))!.expiresAt, expected);
  }
  gw.advance(createdAt + 72 * HOUR - 60_000 - gw.now());
  assert.equal(await callUpstream(accessToken), 401, 'our access token expired');
  const last = await refresh(refreshToken);
  assert.equal(last.status, 200, 'a minute before the end: still refreshed');
  assert.equal((await gw.stores.sessions.get(alice.sessionId))!.expiresAt, createdAt + 72 * HOUR, 'but not extended');
  gw.advance(60_000);
  const over = await refresh(String(last.body.refresh_token));
  assert.equal(over.status, 400);
  assert.equal(over.body.error, 'invalid_grant');
  assert.equal(await gw.stores.sessions.get(alice.sessionId), undefined);
  assert.equal(await callUpstream(String(last.body.access_token)), 401);
});
