/**
 * The JWT check of the gateway path: every bad token is a 401 with the resource's challenge, a
 * token for upstream A is refused at B, a revoked session is refused at once (cached or not),
 * and the cache spares the signature check (counted, not timed).
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { SignJWT, decodeJwt } from 'jose';
import { generateSigningKeyPem, loadSigningKeys } from '../../src/authserver/tokens/keys.ts';
import { createTokenIssuer } from '../../src/authserver/tokens/mint.ts';
import type { Upstream } from '../../src/gateway/upstream.ts';
import { createJwtAuthenticator } from '../../src/gateway/verify-token.ts';
import { HttpError } from '../../src/http/errors.ts';
import type { RequestContext } from '../../src/http/router.ts';
import { login, postForm, registerClient, seedLogin, startAuthGateway, type AuthGateway } from '../authserver/fixture.ts';
import { startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';

const pem = generateSigningKeyPem();
const keys = loadSigningKeys({ pems: [pem], devMode: false, warn: () => undefined });
let gw: AuthGateway;
let upstreamA: RawUpstream;
let upstreamB: RawUpstream;
let client: Awaited<ReturnType<typeof registerClient>>;

before(async () => {
  upstreamA = await startRawUpstream();
  upstreamB = await startRawUpstream();
  gw = await startAuthGateway({ upstreams: [{ name: 'a', url: upstreamA.url }, { name: 'b', url: upstreamB.url }], signingKeys: [pem] });
  client = await registerClient(gw);
});
after(async () => {
  await gw.close();
  await upstreamA.close();
  await upstreamB.close();
});

async function call(name: string, authorization?: string): Promise<{ status: number; challenge: string; body: string }> {
  const res = await fetch(`${gw.url}${name}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(authorization ? { authorization } : {}) },
    body: '{"jsonrpc":"2.0","id":7,"method":"ping"}',
  });
  return { status: res.status, challenge: res.headers.get('www-authenticate') ?? '', body: await res.text() };
}

function challengeFor(name: string, error?: string): RegExp {
  const metadata = `${gw.url}.well-known/oauth-protected-resource/${name}/mcp`.replace(/[.?/]/g, '\\$&');
  return new RegExp(`^Bearer resource_metadata="${metadata}", scope="mcp"${error ? `, error="${error}", error_description="[^"]+"` : ''}$`);
}

/** A JWT signed with `signingKey` (our key by default) with the given claims and header changes. */
async function forge(claims: Record<string, unknown>, options: { typ?: string; key?: typeof keys } = {}): Promise<string> {
  const signer = options.key ?? keys;
  const now = Math.floor(gw.now() / 1000);
  return new SignJWT({ iss: gw.issuer, aud: gw.resource('a'), sub: 'alice', client_id: client.clientId, scope: 'mcp', jti: 'j', iat: now, exp: now + 600, ...claims })
    .setProtectedHeader({ alg: signer.signing.alg, kid: signer.signing.kid, typ: options.typ ?? 'at+jwt' })
    .sign(signer.signing.privateKey);
}

describe('the gateway path refuses every bad token with the resource challenge', () => {
  test('a valid token passes, and reaches only its own upstream', async () => {
    const tokens = await login(gw, client, { resource: gw.resource('a') });
    const ok = await call('a', `Bearer ${tokens.accessToken}`);
    assert.equal(ok.status, 200, ok.body);
    assert.equal(upstreamA.requests.at(-1)?.headers.authorization, undefined, 'our token is never forwarded');
    const atB = await call('b', `Bearer ${tokens.accessToken}`);
    assert.equal(atB.status, 401);
    assert.match(atB.challenge, challengeFor('b', 'invalid_token'));
    assert.equal(upstreamB.requests.length, 0);
  });

  test('no token: the bare challenge without an error code (RFC 6750 §3.1), as a JSON-RPC error with the id', async () => {
    for (const authorization of [undefined, 'Basic YTpi']) {
      const res = await call('a', authorization);
      assert.equal(res.status, 401);
      assert.match(res.challenge, challengeFor('a'));
      assert.equal(JSON.parse(res.body).id, 7);
    }
  });

  test('malformed, tampered, foreign-key, wrong-type, wrong-issuer and unsigned tokens', async () => {
    const tokens = await login(gw, client, { resource: gw.resource('a') });
    const [h, p, s] = tokens.accessToken.split('.') as [string, string, string];
    const claims = decodeJwt(tokens.accessToken);
    const tamperedPayload = Buffer.from(JSON.stringify({ ...claims, sub: 'mallory' })).toString('base64url');
    const otherKeys = loadSigningKeys({ pems: [generateSigningKeyPem()], devMode: false, warn: () => undefined });
    const unsigned = `${Buffer.from('{"alg":"none","typ":"at+jwt"}').toString('base64url')}.${p}.`;
    const cases: Record<string, string> = {
      'empty bearer': 'Bearer ',
      'two tokens': `Bearer ${tokens.accessToken} ${tokens.accessToken}`,
      garbage: 'Bearer not-a-jwt',
      'tampered payload': `Bearer ${h}.${tamperedPayload}.${s}`,
      'tampered signature': `Bearer ${h}.${p}.${s.slice(0, -4)}AAAA`,
      'signed by another key': `Bearer ${await forge({ sid: tokens.sessionId }, { key: otherKeys })}`,
      'another key claiming our kid': `Bearer ${await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'ES256', kid: keys.signing.kid, typ: 'at+jwt' }).sign(otherKeys.signing.privateKey)}`,
      'typ JWT (an ID token, not an access token)': `Bearer ${await forge({ sid: tokens.sessionId }, { typ: 'JWT' })}`,
      'wrong issuer': `Bearer ${await forge({ sid: tokens.sessionId, iss: 'https://evil.example' })}`,
      'no sid': `Bearer ${await forge({})}`,
      'alg none': `Bearer ${unsigned}`,
      oversized: `Bearer ${'a'.repeat(9000)}`,
    };
    for (const [name, authorization] of Object.entries(cases)) {
      const res = await call('a', authorization);
      assert.equal(res.status, 401, name);
      assert.match(res.challenge, challengeFor('a', 'invalid_token'), name);
    }
    assert.equal((await call('a', `Bearer ${await forge({ sid: tokens.sessionId })}`)).status, 200, 'the same claims, properly signed, pass');
  });

  test('an expired token is refused even though it was cached', async () => {
    const tokens = await login(gw, client, { resource: gw.resource('a') });
    assert.equal((await call('a', `Bearer ${tokens.accessToken}`)).status, 200);
    gw.advance(601_000);
    const res = await call('a', `Bearer ${tokens.accessToken}`);
    assert.equal(res.status, 401);
    assert.match(res.challenge, challengeFor('a', 'invalid_token'));
  });

  test('a revoked session is refused at once, cached token or not', async () => {
    const tokens = await login(gw, client, { resource: gw.resource('a') });
    assert.equal((await call('a', `Bearer ${tokens.accessToken}`)).status, 200);
    const logout = await fetch(`${gw.issuer}/oauth/logout`, { method: 'POST', headers: { authorization: `Bearer ${tokens.accessToken}` } });
    assert.equal(logout.status, 204);
    const res = await call('a', `Bearer ${tokens.accessToken}`);
    assert.equal(res.status, 401);
    assert.match(res.challenge, challengeFor('a', 'invalid_token'));
    const refresh = await postForm(`${gw.issuer}/oauth/token`, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: tokens.refreshToken });
    assert.equal(refresh.body.error, 'invalid_grant');
  });

  test('a token without the resource scope is 403 insufficient_scope naming the scope', async () => {
    const seeded = await seedLogin(gw, { ...client, resource: gw.resource('a'), scopes: ['other'] });
    const res = await postForm(`${gw.issuer}/oauth/token`, {
      grant_type: 'authorization_code', client_id: client.clientId, code: seeded.code, redirect_uri: client.redirectUri, code_verifier: seeded.verifier,
    });
    const denied = await call('a', `Bearer ${String(res.body.access_token)}`);
    assert.equal(denied.status, 403);
    assert.match(denied.challenge, challengeFor('a', 'insufficient_scope'));
  });
});

describe('the verified-token cache', () => {
  test('100 requests with one token cost one signature check; audience and session are still checked on hits', async () => {
    const sessions = new Map<string, { sessionId: string; subject: string; clientId: string; createdAt: number; expiresAt: number }>();
    let now = Date.now();
    const authenticator = createJwtAuthenticator({
      issuer: 'https://gw.example',
      keys,
      stores: {
        sessions: {
          get: async (sid) => sessions.get(sid),
          put: async () => undefined,
          extend: async () => undefined,
          listForUser: async () => [],
          listAll: async () => [...sessions.keys()],
          revoke: async (sid) => void sessions.delete(sid),
        },
      },
      upstreamScopes: new Map([['a', ['mcp']], ['b', ['mcp']]]),
      cacheSize: 2,
      now: () => now,
    });
    const upstream = (name: string) => ({ name, resource: `https://gw.example/${name}/mcp` }) as Upstream;
    const ctx = (token: string) => ({ req: { headers: { authorization: `Bearer ${token}` } } as IncomingMessage }) as RequestContext;
    const issuer = createTokenIssuer({ issuer: 'https://gw.example', keys, accessTokenTtlMs: 600_000, now: () => now });
    const issue = async (sid: string) => {
      sessions.set(sid, { sessionId: sid, subject: 'alice', clientId: 'c', createdAt: now, expiresAt: now + 86_400_000 });
      return (await issuer.issueAccessToken({ subject: 'alice', resource: 'https://gw.example/a/mcp', clientId: 'c', scopes: ['mcp'], sessionId: sid })).token;
    };
    const refusal = async (promise: Promise<unknown> | undefined) => {
      const error = await Promise.resolve(promise).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof HttpError, 'refused');
      return error.status;
    };

    const token = await issue('s1');
    for (let i = 0; i < 100; i++) assert.equal((await authenticator.authenticate(ctx(token), upstream('a')))?.sessionId, 's1');
    assert.deepEqual(authenticator.stats(), { verifications: 1, cacheHits: 99, cached: 1 });

    assert.equal(await refusal(authenticator.authenticate(ctx(token), upstream('b'))), 401, 'a cached token is still bound to its audience');
    assert.equal(authenticator.stats().verifications, 1);

    sessions.delete('s1');
    assert.equal(await refusal(authenticator.authenticate(ctx(token), upstream('a'))), 401, 'a cached token of a revoked session');

    // Bounded: two more tokens push the first out, so it is verified again.
    const t2 = await issue('s2');
    const t3 = await issue('s3');
    await authenticator.authenticate(ctx(t2), upstream('a'));
    await authenticator.authenticate(ctx(t3), upstream('a'));
    sessions.set('s1', { sessionId: 's1', subject: 'alice', clientId: 'c', createdAt: now, expiresAt: now + 86_400_000 });
    await authenticator.authenticate(ctx(token), upstream('a'));
    assert.equal(authenticator.stats().verifications, 4);
    assert.equal(authenticator.stats().cached, 2);

    now += 601_000;
    assert.equal(await refusal(authenticator.authenticate(ctx(t3), upstream('a'))), 401, 'expiry ends a cache entry');
    assert.equal(authenticator.stats().verifications, 5);
  });
});
