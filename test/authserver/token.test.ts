/**
 * `POST /oauth/token` on a real gateway: codes are created through the domain stores (as the
 * callback leaves them), everything else goes over HTTP.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { createStepUpMarks } from '../../src/authserver/tokens/step-up.ts';
import { login, postForm, registerClient, seedLogin, startAuthGateway, type AuthGateway } from './fixture.ts';

let gw: AuthGateway;
let tokenUrl: string;
const secrets: string[] = [];

before(async () => {
  gw = await startAuthGateway({ upstreams: [{ name: 'kube', url: 'http://127.0.0.1:9/mcp' }, { name: 'docs', url: 'http://127.0.0.1:9/mcp' }] });
  tokenUrl = `${gw.issuer}/oauth/token`;
});
after(async () => {
  await gw.close();
});

/** A public client and a fresh login for it, ready for the code exchange. */
async function freshCode(options: { scopes?: string[]; codeTtlMs?: number } = {}) {
  const client = await registerClient(gw);
  const seeded = await seedLogin(gw, { ...client, resource: gw.resource('kube'), ...options });
  secrets.push(seeded.code, seeded.verifier);
  const params = {
    grant_type: 'authorization_code',
    client_id: client.clientId,
    code: seeded.code,
    redirect_uri: client.redirectUri,
    code_verifier: seeded.verifier,
  };
  return { client, seeded, params };
}

function assertOAuthError(res: { status: number; body: Record<string, unknown> }, status: number, error: string): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.error, error);
  assert.equal(typeof res.body.error_description, 'string');
}

function remember<T extends { body: Record<string, unknown> }>(res: T): T {
  for (const name of ['access_token', 'refresh_token']) if (typeof res.body[name] === 'string') secrets.push(res.body[name] as string);
  return res;
}

describe('authorization_code grant', () => {
  test('a valid exchange returns our JWT (RFC 9068) and an opaque refresh token, never cached', async () => {
    const { params, client, seeded } = await freshCode();
    const res = remember(await postForm(tokenUrl, { ...params, resource: gw.resource('kube') }));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.body.token_type, 'Bearer');
    assert.equal(res.body.expires_in, 600);
    assert.equal(res.body.scope, 'mcp');
    assert.match(String(res.body.refresh_token), /^[A-Za-z0-9_-]{43}$/);
    const header = decodeProtectedHeader(String(res.body.access_token));
    assert.equal(header.typ, 'at+jwt');
    assert.equal(header.alg, 'ES256');
    const claims = decodeJwt(String(res.body.access_token));
    assert.equal(claims.iss, gw.issuer);
    assert.equal(claims.aud, gw.resource('kube'));
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.client_id, client.clientId);
    assert.equal(claims.sid, seeded.sessionId);
    assert.equal(claims.scope, 'mcp');
    assert.equal(claims.exp! - claims.iat!, 600);
    assert.equal(typeof claims.jti, 'string');
  });

  test('a wrong PKCE verifier is invalid_grant and spends the code', async () => {
    const { params } = await freshCode();
    assertOAuthError(await postForm(tokenUrl, { ...params, code_verifier: 'x'.repeat(43) }), 400, 'invalid_grant');
    assertOAuthError(await postForm(tokenUrl, params), 400, 'invalid_grant');
  });

  test('a missing or malformed PKCE verifier is invalid_grant', async () => {
    const { params } = await freshCode();
    const { code_verifier: _omitted, ...withoutVerifier } = params;
    assertOAuthError(await postForm(tokenUrl, withoutVerifier), 400, 'invalid_grant');
    const second = await freshCode();
    assertOAuthError(await postForm(tokenUrl, { ...second.params, code_verifier: 'short' }), 400, 'invalid_grant');
  });

  test('redirect_uri must match exactly; a missing one is invalid_request', async () => {
    const { params } = await freshCode();
    const { redirect_uri: _omitted, ...withoutRedirect } = params;
    assertOAuthError(await postForm(tokenUrl, withoutRedirect), 400, 'invalid_request');
    assertOAuthError(await postForm(tokenUrl, { ...params, redirect_uri: `${params.redirect_uri}/` }), 400, 'invalid_grant');
  });

  test('an unknown client is invalid_client (401)', async () => {
    const { params } = await freshCode();
    assertOAuthError(await postForm(tokenUrl, { ...params, client_id: 'nobody' }), 401, 'invalid_client');
  });

  test('a code issued to another client is refused', async () => {
    const { params } = await freshCode();
    const other = await registerClient(gw);
    assertOAuthError(await postForm(tokenUrl, { ...params, client_id: other.clientId }), 400, 'invalid_grant');
  });

  test('a resource other than the authorized one is invalid_target', async () => {
    const { params } = await freshCode();
    assertOAuthError(await postForm(tokenUrl, { ...params, resource: gw.resource('docs') }), 400, 'invalid_target');
  });

  test('a reused code is invalid_grant and revokes the session: its refresh token dies too', async () => {
    const { params, seeded } = await freshCode();
    const first = remember(await postForm(tokenUrl, params));
    assert.equal(first.status, 200);
    assertOAuthError(await postForm(tokenUrl, params), 400, 'invalid_grant');
    assert.equal(await gw.stores.sessions.get(seeded.sessionId), undefined);
    assert.equal(await gw.stores.idpTokens.get(seeded.sessionId), undefined);
    assertOAuthError(
      await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: params.client_id, refresh_token: String(first.body.refresh_token) }),
      400,
      'invalid_grant',
    );
  });

  test('an expired code is invalid_grant', async () => {
    const { params } = await freshCode({ codeTtlMs: 60_000 });
    gw.advance(60_001);
    assertOAuthError(await postForm(tokenUrl, params), 400, 'invalid_grant');
  });

  test('a client registered without the refresh_token grant gets no refresh token', async () => {
    const client = await registerClient(gw, { grantTypes: ['authorization_code'] });
    const seeded = await seedLogin(gw, { ...client, resource: gw.resource('kube') });
    const res = remember(
      await postForm(tokenUrl, { grant_type: 'authorization_code', client_id: client.clientId, code: seeded.code, redirect_uri: client.redirectUri, code_verifier: seeded.verifier }),
    );
    assert.equal(res.status, 200);
    assert.equal(res.body.refresh_token, undefined);
    assertOAuthError(await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: 'x' }), 400, 'unauthorized_client');
  });
});

describe('refresh_token grant', () => {
  test('rotation: each refresh returns a new refresh token; the session never outlives its absolute lifetime', async () => {
    const client = await registerClient(gw);
    // IdP tokens still valid at the refresh: the IdP is not asked (this gateway's IdP refuses every call).
    const tokens = await login(gw, client, { resource: gw.resource('kube'), idpTokens: { accessToken: 'idp-at', expiresAt: gw.now() + 2 * 3_600_000 } });
    secrets.push(tokens.accessToken, tokens.refreshToken);
    const before = (await gw.stores.sessions.get(tokens.sessionId))!.expiresAt;
    gw.advance(3_600_000);
    const res = remember(await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: tokens.refreshToken }));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.notEqual(res.body.refresh_token, tokens.refreshToken);
    assert.equal(decodeJwt(String(res.body.access_token)).sid, tokens.sessionId);
    const session = await gw.stores.sessions.get(tokens.sessionId);
    // refreshTokenTtl is 30 days, sessionMaxLifetime 7 days (the defaults): the absolute end wins.
    assert.equal(session!.expiresAt, session!.createdAt + 7 * 86_400_000);
    assert.ok(session!.expiresAt >= before);
    const next = remember(await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: String(res.body.refresh_token) }));
    assert.equal(next.status, 200);
  });

  const refresh = (client: { clientId: string }, token: string) =>
    postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: token }).then(remember);

  test('a reused refresh token after the grace revokes the whole family, the newest token included', async () => {
    const client = await registerClient(gw);
    const tokens = await login(gw, client, { resource: gw.resource('kube') });
    const rotated = await refresh(client, tokens.refreshToken);
    assert.equal(rotated.status, 200);
    gw.advance(30_001);
    assertOAuthError(await refresh(client, tokens.refreshToken), 400, 'invalid_grant');
    assert.equal(await gw.stores.sessions.get(tokens.sessionId), undefined);
    assertOAuthError(await refresh(client, String(rotated.body.refresh_token)), 400, 'invalid_grant');
  });

  test('the previous refresh token presented again within the grace: invalid_grant, and the family lives on', async () => {
    const client = await registerClient(gw);
    const tokens = await login(gw, client, { resource: gw.resource('kube') });
    const rotated = await refresh(client, tokens.refreshToken);
    assert.equal(rotated.status, 200);
    gw.advance(29_000);
    const again = await refresh(client, tokens.refreshToken);
    assertOAuthError(again, 400, 'invalid_grant');
    assert.match(String(again.body.error_description), /issued in its place/);
    assert.ok(await gw.stores.sessions.get(tokens.sessionId), 'the session is kept');
    assert.equal((await refresh(client, String(rotated.body.refresh_token))).status, 200, 'the successor still works');
  });

  test('within the grace, an older refresh token (its successor already used) still revokes the family', async () => {
    const client = await registerClient(gw);
    const tokens = await login(gw, client, { resource: gw.resource('kube') });
    const second = await refresh(client, tokens.refreshToken);
    const third = await refresh(client, String(second.body.refresh_token));
    assert.equal(third.status, 200);
    assertOAuthError(await refresh(client, tokens.refreshToken), 400, 'invalid_grant');
    assert.equal(await gw.stores.sessions.get(tokens.sessionId), undefined);
    assertOAuthError(await refresh(client, String(third.body.refresh_token)), 400, 'invalid_grant');
  });

  test("one agent's concurrent refreshes with the same token: one new pair, the others invalid_grant, the session alive", async () => {
    const client = await registerClient(gw);
    const tokens = await login(gw, client, { resource: gw.resource('kube') });
    const answers = await Promise.all(Array.from({ length: 6 }, () => refresh(client, tokens.refreshToken)));
    const won = answers.filter((a) => a.status === 200);
    assert.equal(won.length, 1, JSON.stringify(answers.map((a) => a.status)));
    for (const lost of answers.filter((a) => a.status !== 200)) assertOAuthError(lost, 400, 'invalid_grant');
    assert.ok(await gw.stores.sessions.get(tokens.sessionId));
    assert.equal((await refresh(client, String(won[0]!.body.refresh_token))).status, 200);
  });

  test('another client cannot use (or spend) a refresh token', async () => {
    const owner = await registerClient(gw);
    const thief = await registerClient(gw);
    const tokens = await login(gw, owner, { resource: gw.resource('kube') });
    assertOAuthError(await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: thief.clientId, refresh_token: tokens.refreshToken }), 400, 'invalid_grant');
    const res = remember(await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: owner.clientId, refresh_token: tokens.refreshToken }));
    assert.equal(res.status, 200, 'the owner can still refresh');
  });

  test('scope may narrow but never widen, and the refresh token keeps the original grant', async () => {
    const client = await registerClient(gw);
    const seeded = await seedLogin(gw, { ...client, resource: gw.resource('kube'), scopes: ['mcp', 'extra'] });
    const first = remember(
      await postForm(tokenUrl, { grant_type: 'authorization_code', client_id: client.clientId, code: seeded.code, redirect_uri: client.redirectUri, code_verifier: seeded.verifier }),
    );
    assert.equal(first.body.scope, 'mcp extra');
    const narrowed = remember(await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: String(first.body.refresh_token), scope: 'mcp' }));
    assert.equal(narrowed.body.scope, 'mcp');
    assert.equal(decodeJwt(String(narrowed.body.access_token)).scope, 'mcp');
    assertOAuthError(
      await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: String(narrowed.body.refresh_token), scope: 'mcp admin' }),
      400,
      'invalid_scope',
    );
    const full = remember(await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: String(narrowed.body.refresh_token) }));
    assert.equal(full.body.scope, 'mcp extra');
  });

  test('resource may repeat the token’s resource, never select another', async () => {
    const client = await registerClient(gw);
    const tokens = await login(gw, client, { resource: gw.resource('kube') });
    assertOAuthError(
      await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: tokens.refreshToken, resource: gw.resource('docs') }),
      400,
      'invalid_target',
    );
    const same = remember(await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: tokens.refreshToken, resource: gw.resource('kube') }));
    assert.equal(same.status, 200);
  });

  test('an unknown refresh token is invalid_grant', async () => {
    const client = await registerClient(gw);
    assertOAuthError(await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: 'never-issued' }), 400, 'invalid_grant');
  });
});

describe('refresh after the HTTP re-challenge (step-up marks)', () => {
  // The marks the gateway sets when it answers 403 insufficient_scope, over the same store and clock.
  const marks = () => createStepUpMarks({ store: gw.store, now: gw.now });
  const refresh = (client: { clientId: string }, token: string) =>
    postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: token }).then(remember);

  test('refused with invalid_grant, then interaction_required for the same token presented again, then the session refreshes as before', async () => {
    const client = await registerClient(gw);
    const tokens = await login(gw, client, { resource: gw.resource('kube') });
    await marks().mark(tokens.sessionId, ['mcp', 'mcpgate:connect:kube']);
    assertOAuthError(await refresh(client, tokens.refreshToken), 400, 'invalid_grant');
    // What SDK 1.32.2 does without invalidateCredentials: the same token at once; this answer sends it to a new authorization.
    assertOAuthError(await refresh(client, tokens.refreshToken), 400, 'interaction_required');
    // The refusals spent nothing: the token was never rotated, and the spent mark refuses no more.
    const res = await refresh(client, tokens.refreshToken);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(decodeJwt(String(res.body.access_token)).sid, tokens.sessionId);
  });

  test('a mark refuses refreshes for at most its lifetime from the challenge, never extended by a refusal', async () => {
    const client = await registerClient(gw);
    const tokens = await login(gw, client, { resource: gw.resource('kube'), idpTokens: { accessToken: 'idp-at', expiresAt: gw.now() + 2 * 3_600_000 } });
    await marks().mark(tokens.sessionId, ['mcp', 'mcpgate:connect:kube']);
    gw.advance(9 * 60_000);
    assertOAuthError(await refresh(client, tokens.refreshToken), 400, 'invalid_grant');
    gw.advance(60_001); // 10 minutes after the challenge: the mark is gone, refused once or not
    assert.equal((await refresh(client, tokens.refreshToken)).status, 200);
  });

  test('a new challenge starts a new mark: its first refusal is invalid_grant again', async () => {
    const client = await registerClient(gw);
    const tokens = await login(gw, client, { resource: gw.resource('kube') });
    await marks().mark(tokens.sessionId, ['mcp', 'mcpgate:connect:kube']);
    assertOAuthError(await refresh(client, tokens.refreshToken), 400, 'invalid_grant');
    await marks().mark(tokens.sessionId, ['mcp', 'mcpgate:connect:kube']);
    assertOAuthError(await refresh(client, tokens.refreshToken), 400, 'invalid_grant');
    assertOAuthError(await refresh(client, tokens.refreshToken), 400, 'interaction_required');
  });

  test('another session is not refused', async () => {
    const client = await registerClient(gw);
    const marked = await login(gw, client, { resource: gw.resource('kube') });
    const other = await login(gw, client, { resource: gw.resource('kube') });
    await marks().mark(marked.sessionId, ['mcp', 'mcpgate:connect:kube']);
    assert.equal((await refresh(client, other.refreshToken)).status, 200);
  });
});

describe('client authentication', () => {
  test('client_secret_basic: right secret accepted, wrong one 401 with a Basic challenge', async () => {
    const client = await registerClient(gw, { method: 'client_secret_basic' });
    secrets.push(client.secret!);
    const seeded = await seedLogin(gw, { ...client, resource: gw.resource('kube') });
    const params = { grant_type: 'authorization_code', code: seeded.code, redirect_uri: client.redirectUri, code_verifier: seeded.verifier };
    const basic = (secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(client.clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`;
    const wrong = await postForm(tokenUrl, params, { authorization: basic('wrong-secret') });
    assertOAuthError(wrong, 401, 'invalid_client');
    assert.match(wrong.headers.get('www-authenticate') ?? '', /^Basic /);
    const ok = remember(await postForm(tokenUrl, params, { authorization: basic(client.secret!) }));
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });

  test('client_secret_post: the secret in the body; the other method is refused', async () => {
    const client = await registerClient(gw, { method: 'client_secret_post' });
    secrets.push(client.secret!);
    const seeded = await seedLogin(gw, { ...client, resource: gw.resource('kube') });
    const params = { grant_type: 'authorization_code', code: seeded.code, redirect_uri: client.redirectUri, code_verifier: seeded.verifier };
    assertOAuthError(await postForm(tokenUrl, { ...params, client_id: client.clientId }), 401, 'invalid_client');
    assertOAuthError(await postForm(tokenUrl, { ...params, client_id: client.clientId, client_secret: 'nope' }), 401, 'invalid_client');
    const ok = remember(await postForm(tokenUrl, { ...params, client_id: client.clientId, client_secret: client.secret! }));
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });

  test('a public client presenting a secret is refused; two methods at once are invalid_request', async () => {
    const client = await registerClient(gw);
    assertOAuthError(await postForm(tokenUrl, { grant_type: 'refresh_token', client_id: client.clientId, client_secret: 'x', refresh_token: 'x' }), 401, 'invalid_client');
    const basic = `Basic ${Buffer.from(`${client.clientId}:x`).toString('base64')}`;
    assertOAuthError(await postForm(tokenUrl, { grant_type: 'refresh_token', client_secret: 'x', refresh_token: 'x' }, { authorization: basic }), 400, 'invalid_request');
  });
});

describe('malformed requests get the spec’s error, never a 500', () => {
  test('wrong media type, missing or unknown grant type, repeated parameters, no client', async () => {
    const client = await registerClient(gw);
    const json = await fetch(tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"grant_type":"refresh_token"}' });
    assert.equal(json.status, 400);
    assert.equal(((await json.json()) as { error: string }).error, 'invalid_request');
    assertOAuthError(await postForm(tokenUrl, { client_id: client.clientId }), 400, 'invalid_request');
    assertOAuthError(await postForm(tokenUrl, { client_id: client.clientId, grant_type: 'password' }), 400, 'unsupported_grant_type');
    assertOAuthError(await postForm(tokenUrl, { grant_type: 'refresh_token', refresh_token: 'x' }), 400, 'invalid_request');
    const repeated = await fetch(tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `grant_type=refresh_token&client_id=${client.clientId}&refresh_token=a&refresh_token=b`,
    });
    assert.equal(repeated.status, 400);
    const garbage = await fetch(tokenUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '%%%&&&==\u0000' });
    assert.equal(garbage.status, 400);
    const malformedBasic = await postForm(tokenUrl, { grant_type: 'refresh_token', refresh_token: 'x' }, { authorization: 'Basic %%%' });
    assertOAuthError(malformedBasic, 401, 'invalid_client');
    const huge = await fetch(tokenUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `code=${'a'.repeat(100_000)}` });
    assert.equal(huge.status, 413);
  });

  test('the log holds no code, verifier, token or secret', () => {
    const text = gw.logs.text();
    assert.ok(secrets.length > 20);
    for (const secret of secrets) assert.ok(!text.includes(secret), 'a secret reached the log');
  });
});
