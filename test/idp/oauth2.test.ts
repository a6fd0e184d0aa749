/**
 * The plain OAuth 2.0 IdP client (`idp.kind: oauth2`) against a real RFC 6749 server with no
 * OpenID Connect (test/support/oauth2-idp.ts, GitHub-shaped): the authorization request with
 * PKCE S256 and state, the code exchange asking for JSON, the user from the user-info API at a
 * configured path, GitHub's quirks (errors answered with 200, a User-Agent required), tokens that
 * never expire, refresh with rotation, revocation, and every failure sorted into `rejected` or
 * `unavailable`.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../../src/config/load.ts';
import type { OAuth2IdpConfig } from '../../src/config/schema.ts';
import { createOAuth2IdpClient } from '../../src/idp/oauth2.ts';
import { IdpError, type IdpClient, type IdpLoginResult } from '../../src/idp/types.ts';
import { startOAuth2Idp, type OAuth2Idp } from '../support/oauth2-idp.ts';

const redirectUri = 'http://127.0.0.1:9/oauth/callback'; // never contacted: the login below stops before it

/** The `idp:` section as `mcpgate check` would produce it from YAML. */
function idpConfig(idp: OAuth2Idp, extra: Record<string, unknown> = {}): OAuth2IdpConfig {
  const { revocationEndpoint: _, ...endpoints } = idp.endpoints;
  const config = parseConfig(
    JSON.stringify({
      server: { publicUrl: 'http://127.0.0.1:9', devMode: true },
      idp: { kind: 'oauth2', ...endpoints, clientId: idp.clientId, clientSecret: 'env:SECRET', userClaim: 'login', scopes: ['read:user'], ...extra },
      upstreams: [{ name: 'x', url: 'http://127.0.0.1:9/mcp', auth: { mode: 'idp' } }],
    }),
    'test',
    { env: { SECRET: idp.clientSecret }, readFile: () => '' },
  );
  assert.equal(config.idp?.kind, 'oauth2');
  return config.idp as OAuth2IdpConfig;
}

/** Signs `login` in through the IdP's form with plain HTTP and returns what `finishLogin` made of the callback. */
async function signIn(idp: OAuth2Idp, client: IdpClient, login = 'alice'): Promise<IdpLoginResult> {
  const state = randomBytes(12).toString('base64url');
  const start = await client.startLogin(state);
  const callback = await browse(idp, start.url, login);
  return client.finishLogin(callback, { state, codeVerifier: start.codeVerifier, nonce: start.nonce });
}

/** The login form, filled and submitted; resolves with the callback URL the IdP redirects to. */
async function browse(idp: OAuth2Idp, authorizationUrl: string, login: string): Promise<URL> {
  const page = await fetch(authorizationUrl);
  const html = await page.text();
  assert.equal(page.status, 200, html);
  const tx = /name="tx" value="([^"]+)"/.exec(html)![1]!;
  const user = idp.users.find((u) => u.login === login)!;
  const answer = await fetch(`${idp.url}/session`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ tx, login, password: user.password }).toString(),
  });
  assert.equal(answer.status, 302);
  return new URL(answer.headers.get('location')!);
}

describe('OAuth 2.0 IdP, tokens that never expire (a GitHub OAuth app)', () => {
  let idp: OAuth2Idp;
  let client: IdpClient;

  before(async () => {
    idp = await startOAuth2Idp({ users: [{ login: 'alice', id: 1, name: 'Alice Liddell' }, { login: 'bob', id: 2 }, { login: 'eve', id: 3, email: 'eve@example.com' }] });
    idp.redirectUris.add(redirectUri);
    client = createOAuth2IdpClient({ config: idpConfig(idp), redirectUri, devMode: true });
  });
  after(() => idp?.close());

  test('the authorization request carries PKCE S256, state, client_id, redirect_uri and scope; no nonce', async () => {
    const start = await client.startLogin('our-state');
    const url = new URL(start.url);
    assert.equal(`${url.origin}${url.pathname}`, idp.endpoints.authorizationEndpoint);
    const q = Object.fromEntries(url.searchParams);
    assert.deepEqual(q, {
      response_type: 'code',
      client_id: idp.clientId,
      redirect_uri: redirectUri,
      state: 'our-state',
      code_challenge: createHash('sha256').update(start.codeVerifier).digest('base64url'),
      code_challenge_method: 'S256',
      scope: 'read:user',
    });
    assert.ok(start.codeVerifier.length >= 43, 'RFC 7636 §4.1: at least 43 characters');
  });

  test('operator authParams never replace the flow’s own parameters', async () => {
    const custom = createOAuth2IdpClient({
      config: idpConfig(idp, { authParams: { allow_signup: 'false', state: 'operator', code_challenge_method: 'plain', redirect_uri: 'https://evil.example/cb' } }),
      redirectUri,
      devMode: true,
    });
    const q = new URL((await custom.startLogin('ours')).url).searchParams;
    assert.equal(q.get('allow_signup'), 'false');
    assert.equal(q.get('state'), 'ours');
    assert.equal(q.get('code_challenge_method'), 'S256');
    assert.equal(q.get('redirect_uri'), redirectUri);
  });

  test('login: code exchanged with the verifier as JSON, the user read from the user-info API', async () => {
    const before = idp.tokenRequests.length;
    const result = await signIn(idp, client, 'alice');
    assert.equal(result.subject, 'alice');
    assert.equal(result.claims.name, 'Alice Liddell');
    assert.equal(result.tokens.expiresAt, undefined, 'no expires_in: the token never expires');
    assert.equal(result.tokens.refreshToken, undefined);
    assert.equal(result.tokens.idToken, undefined);
    assert.equal(idp.userOf(result.tokens.accessToken)?.login, 'alice', 'the IdP accepts the token it issued');
    const request = idp.tokenRequests.at(-1)!;
    assert.equal(idp.tokenRequests.length, before + 1);
    assert.equal(request.accept, 'application/json', 'GitHub answers form-encoded otherwise');
    assert.equal(request.form.get('grant_type'), 'authorization_code');
    assert.equal(request.form.get('redirect_uri'), redirectUri);
    assert.ok(request.form.get('code_verifier'));
    assert.equal(request.form.get('client_id'), idp.clientId, 'client_secret_post by default');
    const info = idp.userinfoRequests.at(-1)!;
    assert.equal(info.accept, 'application/json');
    assert.ok(info.userAgent, 'GitHub refuses API requests without a User-Agent');
  });

  test('userClaim "id": the stable numeric id, as a string', async () => {
    const byId = createOAuth2IdpClient({ config: idpConfig(idp, { userClaim: 'id' }), redirectUri, devMode: true });
    assert.equal((await signIn(idp, byId, 'bob')).subject, '2');
  });

  test('a userClaim the user-info answer does not have (null e-mail, missing path) is refused', async () => {
    for (const userClaim of ['email', 'plan.name', 'site_admin', 'constructor', '__proto__']) {
      const missing = createOAuth2IdpClient({ config: idpConfig(idp, { userClaim }), redirectUri, devMode: true });
      await assert.rejects(signIn(idp, missing, 'alice'), (e: unknown) => e instanceof IdpError && e.kind === 'rejected' && e.message.includes(userClaim), userClaim);
    }
    const email = createOAuth2IdpClient({ config: idpConfig(idp, { userClaim: 'email' }), redirectUri, devMode: true });
    assert.equal((await signIn(idp, email, 'eve')).subject, 'eve@example.com');
  });

  test('GitHub’s errors with status 200 (bad_verification_code) are a refusal, not an outage', async () => {
    const state = 's1';
    const start = await client.startLogin(state);
    const callback = await browse(idp, start.url, 'alice');
    await client.finishLogin(callback, { state, codeVerifier: start.codeVerifier, nonce: '' });
    // The same code again: GitHub answers 200 {"error":"bad_verification_code"}.
    await assert.rejects(
      client.finishLogin(callback, { state, codeVerifier: start.codeVerifier, nonce: '' }),
      (e: unknown) => e instanceof IdpError && e.kind === 'rejected' && e.oauthError === 'bad_verification_code',
    );
  });

  test('a callback with a wrong state, no code or an error is refused before any token request', async () => {
    const start = await client.startLogin('right');
    const callback = await browse(idp, start.url, 'alice');
    const before = idp.tokenRequests.length;
    await assert.rejects(client.finishLogin(callback, { state: 'wrong', codeVerifier: start.codeVerifier, nonce: '' }), /state does not match/);
    await assert.rejects(client.finishLogin(new URL(`${redirectUri}?state=right`), { state: 'right', codeVerifier: start.codeVerifier, nonce: '' }), /no authorization code/);
    await assert.rejects(client.finishLogin(new URL(`${redirectUri}?state=right&error=access_denied`), { state: 'right', codeVerifier: '', nonce: '' }), (e: unknown) => e instanceof IdpError && e.oauthError === 'access_denied');
    assert.equal(idp.tokenRequests.length, before);
  });

  test('a wrong client secret is rejected; refresh without a refresh token is rejected', async () => {
    const wrong = createOAuth2IdpClient({ config: { ...idpConfig(idp), clientSecret: 'not-it' }, redirectUri, devMode: true });
    await assert.rejects(signIn(idp, wrong), (e: unknown) => e instanceof IdpError && e.kind === 'rejected' && e.oauthError === 'incorrect_client_credentials');
    const { tokens } = await signIn(idp, client);
    await assert.rejects(client.refresh(tokens), (e: unknown) => e instanceof IdpError && e.kind === 'rejected');
  });

  test('checkAccess: the IdP still accepts the token → resolves; revoked at the IdP → rejected', async () => {
    const { tokens } = await signIn(idp, client);
    await client.checkAccess!(tokens);
    idp.revokeGrantOf(tokens.accessToken);
    await assert.rejects(client.checkAccess!(tokens), (e: unknown) => e instanceof IdpError && e.kind === 'rejected');
  });

  test('revoke: RFC 7009 at the revocation endpoint, only when one is configured', async () => {
    assert.equal(client.revoke, undefined);
    const revoking = createOAuth2IdpClient({ config: idpConfig(idp, { revocationEndpoint: idp.endpoints.revocationEndpoint }), redirectUri, devMode: true });
    const { tokens } = await signIn(idp, revoking);
    await revoking.revoke!(tokens);
    assert.deepEqual(idp.revoked.at(-1), tokens.accessToken);
    assert.equal(idp.userOf(tokens.accessToken), undefined);
  });

  test('an IdP that cannot be reached is unavailable, never a refusal', async () => {
    const down = await startOAuth2Idp();
    down.redirectUris.add(redirectUri);
    const config = idpConfig(down);
    const downClient = createOAuth2IdpClient({ config, redirectUri, devMode: true, timeoutMs: 2000 });
    const { tokens } = await signIn(down, downClient);
    await down.close();
    await assert.rejects(downClient.checkAccess!(tokens), (e: unknown) => e instanceof IdpError && e.kind === 'unavailable');
    await assert.rejects(downClient.finishLogin(new URL(`${redirectUri}?state=s&code=c`), { state: 's', codeVerifier: 'v', nonce: '' }), (e: unknown) => e instanceof IdpError && e.kind === 'unavailable');
  });

  test('http endpoints are refused outside dev mode', () => {
    assert.throws(() => createOAuth2IdpClient({ config: idpConfig(idp), redirectUri, devMode: false }), /https/);
  });
});

describe('OAuth 2.0 IdP, expiring tokens with rotating refresh tokens', () => {
  let idp: OAuth2Idp;
  let client: IdpClient;
  before(async () => {
    idp = await startOAuth2Idp({ accessTokenTtlSeconds: 300 });
    idp.redirectUris.add(redirectUri);
    client = createOAuth2IdpClient({ config: idpConfig(idp, { tokenEndpointAuthMethod: 'client_secret_basic' }), redirectUri, devMode: true, now: () => 1_000_000 });
  });
  after(() => idp?.close());

  test('expires_in sets the expiry; refresh rotates; a replayed refresh token is rejected', async () => {
    const { tokens } = await signIn(idp, client);
    assert.equal(tokens.expiresAt, 1_000_000 + 300_000);
    assert.ok(tokens.refreshToken);
    assert.match(idp.tokenRequests.at(-1)!.authorization ?? '', /^Basic /, 'client_secret_basic when configured');
    const next = await client.refresh(tokens);
    assert.notEqual(next.accessToken, tokens.accessToken);
    assert.notEqual(next.refreshToken, tokens.refreshToken);
    assert.equal(idp.userOf(next.accessToken)?.login, 'alice');
    assert.equal(idp.refreshCount(), 1);
    await assert.rejects(client.refresh(tokens), (e: unknown) => e instanceof IdpError && e.kind === 'rejected' && e.oauthError === 'bad_refresh_token');
  });
});
