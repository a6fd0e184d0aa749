/**
 * The IdP client (openid-client) against a real OpenID provider: lazy discovery that survives an
 * IdP that is down at start, the login with PKCE, nonce and state, the subject from `userClaim`,
 * refresh with a carried-forward refresh token, and every failure sorted into `rejected`
 * (the grant is dead) or `unavailable` (try again later).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Config } from '../../src/config/schema.ts';
import { createOidcIdpClient } from '../../src/idp/oidc.ts';
import { IdpError, type IdpClient } from '../../src/idp/types.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';

const redirectUri = 'http://127.0.0.1:9/oauth/callback'; // never contacted: the browser below stops before it
let idp: DevIdp;

before(async () => {
  idp = await startDevIdp({ accessTokenTtlSeconds: 120 });
});
after(() => idp?.close());

function idpConfig(overrides: Partial<Extract<NonNullable<Config['idp']>, { issuer: string }>> = {}): NonNullable<Config['idp']> {
  return {
    issuer: idp.issuer,
    clientId: idp.clientId,
    clientSecret: idp.clientSecret,
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    userClaim: 'sub',
    authParams: {},
    ...overrides,
  };
}

/**
 * Signs `login` in at the IdP the way a browser would (cookies, redirects, the login form) and
 * returns the callback URL the IdP redirects to, without requesting it.
 */
async function browse(authorizationUrl: string, login = 'alice'): Promise<URL> {
  const jar = new Map<string, string>();
  const password = idp.users.find((u) => u.login === login)!.password;
  let url = authorizationUrl;
  let init: RequestInit = {};
  for (let hop = 0; hop < 12; hop++) {
    const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers as Record<string, string>), cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') } });
    for (const line of res.headers.getSetCookie()) {
      const pair = line.split(';')[0]!;
      jar.set(pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1));
    }
    const location = res.headers.get('location');
    init = {};
    if (location) {
      const next = new URL(location, url);
      if (next.href.startsWith(redirectUri)) return next;
      url = next.href;
      continue;
    }
    const action = /<form method="post" action="([^"]+)"/.exec(await res.text())?.[1];
    assert.ok(action, `no login form at ${url} (HTTP ${res.status})`);
    url = new URL(action, url).href;
    init = { method: 'POST', body: new URLSearchParams({ login, password }).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } };
  }
  throw new Error('too many redirects');
}

async function logIn(client: IdpClient, login = 'alice') {
  const start = await client.startLogin('state-1');
  const callback = await browse(start.url, login);
  return { start, callback, result: await client.finishLogin(callback, { state: 'state-1', codeVerifier: start.codeVerifier, nonce: start.nonce }) };
}

async function assertIdpError(promise: Promise<unknown>, kind: IdpError['kind'], oauthError?: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof IdpError, String(error));
    assert.equal(error.kind, kind, error.message);
    if (oauthError) assert.equal(error.oauthError, oauthError);
    return true;
  });
}

describe('discovery', () => {
  test('is lazy: a client made while the IdP is down works once it is back', async () => {
    await idp.stop();
    let client: IdpClient;
    try {
      client = createOidcIdpClient({ config: idpConfig(), redirectUri, devMode: true });
      await assertIdpError(client.startLogin('s'), 'unavailable');
    } finally {
      await idp.start();
    }
    const start = await client.startLogin('s');
    assert.ok(start.url.startsWith(`${idp.issuer}/auth?`));
  });

  test('an http issuer outside dev mode is refused when the client is made', () => {
    assert.throws(() => createOidcIdpClient({ config: idpConfig(), redirectUri, devMode: false }), TypeError);
  });
});

describe('login', () => {
  test('the authorization request carries PKCE S256, nonce, state, our scopes and the operator parameters, which cannot replace ours', async () => {
    const client = createOidcIdpClient({
      config: idpConfig({ authParams: { audience: 'api://upstreams', state: 'operator-state', code_challenge_method: 'plain', login_hint: 'alice' } }),
      redirectUri,
      devMode: true,
    });
    const start = await client.startLogin('our-state');
    const url = new URL(start.url);
    assert.equal(url.searchParams.get('state'), 'our-state');
    assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
    assert.ok(url.searchParams.get('code_challenge'));
    assert.equal(url.searchParams.get('nonce'), start.nonce);
    assert.equal(url.searchParams.get('redirect_uri'), redirectUri);
    assert.equal(url.searchParams.get('scope'), 'openid profile email offline_access');
    assert.equal(url.searchParams.get('audience'), 'api://upstreams');
    assert.equal(url.searchParams.get('login_hint'), 'alice');
  });

  test('returns the subject, the tokens (access, refresh, ID) with their expiry, and the claims', async () => {
    const clock = 1_800_000_000_000;
    const client = createOidcIdpClient({ config: idpConfig(), redirectUri, devMode: true, now: () => clock });
    const { result } = await logIn(client);
    assert.equal(result.subject, 'alice');
    assert.ok(result.tokens.accessToken && result.tokens.refreshToken && result.tokens.idToken);
    assert.equal(result.tokens.expiresAt, clock + 120_000);
    assert.equal(result.claims['email'], 'alice@example.test');
  });

  test('the subject comes from userClaim', async () => {
    const client = createOidcIdpClient({ config: idpConfig({ userClaim: 'email' }), redirectUri, devMode: true });
    assert.equal((await logIn(client, 'bob')).result.subject, 'bob@example.test');
  });

  test('an ID token without the userClaim is rejected', async () => {
    const client = createOidcIdpClient({ config: idpConfig({ userClaim: 'employee_id' }), redirectUri, devMode: true });
    await assertIdpError(logIn(client), 'rejected');
  });

  test('a wrong state, nonce or PKCE verifier is rejected', async () => {
    const client = createOidcIdpClient({ config: idpConfig(), redirectUri, devMode: true });
    for (const wrong of ['state', 'nonce', 'codeVerifier'] as const) {
      const start = await client.startLogin('state-1');
      const callback = await browse(start.url);
      const expected = { state: 'state-1', codeVerifier: start.codeVerifier, nonce: start.nonce };
      expected[wrong] = wrong === 'codeVerifier' ? 'x'.repeat(43) : 'wrong';
      await assertIdpError(client.finishLogin(callback, expected), 'rejected');
    }
  });
});

describe('refresh', () => {
  test('new tokens; the IdP rotates the refresh token, and the used one is then refused as invalid_grant', async () => {
    const client = createOidcIdpClient({ config: idpConfig(), redirectUri, devMode: true });
    const { result } = await logIn(client);
    const refreshed = await client.refresh(result.tokens);
    assert.notEqual(refreshed.accessToken, result.tokens.accessToken);
    assert.ok(refreshed.refreshToken && refreshed.refreshToken !== result.tokens.refreshToken);
    await assertIdpError(client.refresh(result.tokens), 'rejected', 'invalid_grant');
  });

  test('a refresh token the IdP omits is carried forward, and so is the ID token', async () => {
    // The IdP's answer without refresh_token and id_token, as many IdPs send it.
    const stripping: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (!String(input instanceof Request ? input.url : input).endsWith('/token') || !String(init?.body ?? '').includes('refresh_token')) return res;
      const { refresh_token: _r, id_token: _i, ...rest } = (await res.json()) as Record<string, unknown>;
      return new Response(JSON.stringify(rest), { status: res.status, headers: { 'content-type': 'application/json' } });
    };
    const client = createOidcIdpClient({ config: idpConfig(), redirectUri, devMode: true, fetch: stripping });
    const { result } = await logIn(client);
    const refreshed = await client.refresh(result.tokens);
    assert.notEqual(refreshed.accessToken, result.tokens.accessToken);
    assert.equal(refreshed.refreshToken, result.tokens.refreshToken);
    assert.equal(refreshed.idToken, result.tokens.idToken);
  });

  test('invalid_grant → rejected; the IdP answering 503 or not at all → unavailable; no refresh token → rejected', async () => {
    const client = createOidcIdpClient({ config: idpConfig(), redirectUri, devMode: true });
    const { result } = await logIn(client);
    try {
      idp.failRefresh('invalid_grant');
      await assertIdpError(client.refresh(result.tokens), 'rejected', 'invalid_grant');
      idp.failRefresh('down');
      await assertIdpError(client.refresh(result.tokens), 'unavailable');
    } finally {
      idp.failRefresh(null);
    }
    await idp.stop();
    try {
      await assertIdpError(client.refresh(result.tokens), 'unavailable');
    } finally {
      await idp.start();
    }
    assert.ok((await client.refresh(result.tokens)).accessToken, 'the grant survived the outage');
    await assertIdpError(client.refresh({ accessToken: 'x' }), 'rejected');
  });
});
