/**
 * The token swap end to end (modes `idp` and `id_token`): a real OpenID provider (`oidc-provider`,
 * the development IdP) issues the IdP tokens through a real login; the gateway forwards them to
 * a real `node:http` upstream that records what it saw. The gateway's clock is fake, so "the IdP
 * access token expires in a few seconds" is a clock move, not a wait.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import type { IdpTokens } from '../../src/authserver/records/records.ts';
import { createOidcIdpClient } from '../../src/idp/oidc.ts';
import type { IdpClient } from '../../src/idp/types.ts';
import { login, registerClient, startAuthGateway, type AuthGateway } from '../authserver/fixture.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { metricValue, scrapeMetrics } from '../support/metrics.ts';
import { answerLikeMcp, startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';
import { createBrowser, formAction } from '../upstream-oauth/browser.ts';

let idp: DevIdp;
let idpClient: IdpClient;
let gw: AuthGateway;
/** Store reads the gateway made while `reads.on`, in the order they started and ended. */
const reads = { on: false, events: [] as string[] };
let upstream: RawUpstream;
let client: Awaited<ReturnType<typeof registerClient>>;
/** Tokens the upstream must reject (to drive the upstream-401 path). */
const rejectAtUpstream = new Set<string>();
let rejectEverything = false;
const secrets: string[] = [];

before(async () => {
  idp = await startDevIdp({ accessTokenTtlSeconds: 300 });
  upstream = await startRawUpstream((req, res, recorded) => {
    const token = String(req.headers.authorization ?? '').replace(/^Bearer /, '');
    if (rejectEverything || rejectAtUpstream.has(token)) {
      res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-type': 'application/json' }).end('{}');
      return;
    }
    return answerLikeMcp(req, res, recorded);
  });
  gw = await startAuthGateway({
    wrapStore: (store) => ({
      ...store,
      get(key, signal) {
        if (!reads.on) return store.get(key, signal);
        reads.events.push(`start ${key.split(':')[0]}`);
        return store.get(key, signal).finally(() => reads.events.push(`end ${key.split(':')[0]}`));
      },
    }),
    upstreams: [
      { name: 'kube', url: upstream.url, auth: { mode: 'idp', refreshMargin: '60s' } },
      { name: 'sso', url: upstream.url, auth: { mode: 'id_token' } },
    ],
    idpClient: (now) => {
      idpClient = createOidcIdpClient({
        config: { issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret, scopes: ['openid', 'profile', 'email', 'offline_access'], userClaim: 'sub', authParams: {} },
        // Never requested: the scripted browser stops at it, as the real callback would receive it.
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
async function idpLogin(login: 'alice' | 'bob'): Promise<IdpTokens> {
  const user = idp.users.find((u) => u.login === login)!;
  const state = randomBytes(16).toString('base64url');
  const start = await idpClient.startLogin(state);
  const browser = createBrowser();
  const form = await browser.open(start.url);
  const done = await browser.submit(formAction(form, /\/login$/), { login: user.login, password: user.password }, { stopAt: (url) => url.pathname === '/oauth/callback' });
  const callback = new URL(String(done.headers.location), done.url);
  const result = await idpClient.finishLogin(callback, { state, codeVerifier: start.codeVerifier, nonce: start.nonce });
  assert.equal(result.subject, user.sub);
  secrets.push(result.tokens.accessToken, result.tokens.refreshToken ?? 'none', result.tokens.idToken ?? 'none');
  return result.tokens;
}

/** A gateway session for `who` holding real IdP tokens; returns our tokens for the upstream. */
async function session(who: 'alice' | 'bob', name = 'kube') {
  const idpTokens = await idpLogin(who);
  assert.ok(idpTokens.refreshToken, 'offline_access gave a refresh token');
  const ours = await login(gw, client, { resource: gw.resource(name), subject: who, idpTokens });
  secrets.push(ours.accessToken, ours.refreshToken);
  return { ...ours, idpTokens };
}

async function call(name: string, accessToken: string): Promise<Response> {
  return fetch(`${gw.url}${name}/mcp`, {
    method: 'POST',
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
  });
}

const seen = () => upstream.requests.map((r) => String(r.headers.authorization ?? ''));

/** `mcpgate_token_refreshes_total{kind="idp", outcome}` as /metrics shows it now. */
async function idpRefreshes(outcome: 'success' | 'rejected' | 'unavailable'): Promise<number> {
  return metricValue(await scrapeMetrics(gw.url), 'mcpgate_token_refreshes_total', { kind: 'idp', outcome });
}

/** Moves the gateway clock to `msBefore` ms before the session's IdP access token expires. */
async function nearExpiry(sessionId: string, msBefore = 30_000): Promise<void> {
  const tokens = (await gw.stores.idpTokens.get(sessionId))!;
  gw.advance(tokens.expiresAt! - msBefore - gw.now());
}

describe('mode idp: the IdP access token replaces ours', () => {
  test('the upstream sees the IdP access token (verifiable against the IdP), never ours', async () => {
    const alice = await session('alice');
    const res = await call('kube', alice.accessToken);
    assert.equal(res.status, 200, await res.text());
    const authorization = seen().at(-1)!;
    assert.equal(authorization, `Bearer ${alice.idpTokens.accessToken}`);
    const { payload } = await jwtVerify(alice.idpTokens.accessToken, createRemoteJWKSet(new URL(idp.jwksUri)), { issuer: idp.issuer, audience: idp.audience });
    assert.equal(payload.sub, 'alice');
    assert.ok(seen().every((a) => !a.includes(alice.accessToken)), 'our token never reached the upstream');
  });

  test('the session check and the IdP-token read start together (one round trip with Valkey, not two)', async () => {
    const alice = await session('alice');
    reads.on = true;
    reads.events = [];
    const res = await call('kube', alice.accessToken);
    reads.on = false;
    assert.equal(res.status, 200, await res.text());
    assert.equal(seen().at(-1), `Bearer ${alice.idpTokens.accessToken}`);
    // Both reads are on their way before either answers: with Valkey they leave in one pipeline.
    assert.deepEqual(reads.events.slice(0, 2).sort(), ['start idp', 'start session'], reads.events.join(', '));
    assert.equal(reads.events.length, 4, reads.events.join(', '));
  });

  test('two users never see each other’s upstream tokens', async () => {
    const alice = await session('alice');
    const bob = await session('bob');
    for (const [who, s] of [['alice', alice], ['bob', bob], ['alice', alice]] as const) {
      const res = await call('kube', s.accessToken);
      assert.equal(res.status, 200);
      await res.text();
      assert.equal(decodeJwt(seen().at(-1)!.replace(/^Bearer /, '')).sub, who);
    }
  });

  test('50 concurrent requests on one session with an expiring token cause exactly one IdP refresh', async () => {
    const alice = await session('alice');
    await nearExpiry(alice.sessionId);
    const refreshesBefore = idp.refreshCount();
    const countedBefore = await idpRefreshes('success');
    const from = upstream.requests.length;
    const responses = await Promise.all(Array.from({ length: 50 }, () => call('kube', alice.accessToken)));
    assert.deepEqual(responses.map((r) => r.status), Array(50).fill(200));
    await Promise.all(responses.map((r) => r.text()));
    assert.equal(idp.refreshCount() - refreshesBefore, 1);
    assert.equal((await idpRefreshes('success')) - countedBefore, 1, 'the one refresh is counted once');
    const stored = (await gw.stores.idpTokens.get(alice.sessionId))!;
    secrets.push(stored.accessToken, stored.refreshToken!);
    assert.notEqual(stored.accessToken, alice.idpTokens.accessToken);
    assert.notEqual(stored.refreshToken, alice.idpTokens.refreshToken, 'the rotated IdP refresh token was persisted');
    assert.ok(stored.expiresAt! > gw.now() + 60_000);
    const sent = new Set(upstream.requests.slice(from).map((r) => r.headers.authorization));
    assert.deepEqual([...sent], [`Bearer ${stored.accessToken}`], 'every request carried the refreshed token');
  });

  test('an upstream 401 forces one refresh and one retry; a second 401 is a 502 for that request and the session stays', async () => {
    const alice = await session('alice');
    rejectAtUpstream.add(alice.idpTokens.accessToken);
    const refreshesBefore = idp.refreshCount();
    const res = await call('kube', alice.accessToken);
    assert.equal(res.status, 200, await res.text());
    assert.equal(idp.refreshCount() - refreshesBefore, 1);
    const stored = (await gw.stores.idpTokens.get(alice.sessionId))!;
    secrets.push(stored.accessToken, stored.refreshToken!);
    assert.equal(seen().at(-1), `Bearer ${stored.accessToken}`);

    const bob = await session('bob', 'sso');
    // The upstream refuses even the fresh token the IdP just issued: the upstream is at fault, not the sign-in.
    rejectEverything = true;
    try {
      const refused = await call('kube', alice.accessToken);
      assert.equal(refused.status, 502);
      assert.equal(refused.headers.get('www-authenticate'), null, 'no re-login challenge: signing in again would not help');
      const body = (await refused.json()) as { id: number; error: { message: string } };
      assert.equal(body.id, 1);
      assert.match(body.error.message, /refused the identity provider's token even after a refresh; your sign-in is kept/);
      const sso = await call('sso', bob.accessToken);
      assert.equal(sso.status, 502, `mode id_token answers the same: ${await sso.text()}`);
      assert.ok(await gw.stores.sessions.get(bob.sessionId));
      const bobTokens = (await gw.stores.idpTokens.get(bob.sessionId))!;
      secrets.push(bobTokens.accessToken, bobTokens.refreshToken ?? 'none', bobTokens.idToken ?? 'none');
    } finally {
      rejectEverything = false;
    }
    assert.ok(await gw.stores.sessions.get(alice.sessionId), 'the session survives an upstream that refuses it');
    assert.ok(await gw.stores.idpTokens.get(alice.sessionId), 'its IdP tokens too');
    const again = await call('kube', alice.accessToken);
    assert.equal(again.status, 200, 'the same token works once the upstream accepts it again');
    await again.text();
  });

  test('an upstream 401 whose renewal the IdP refuses ends the session (only the IdP decides that)', async () => {
    const alice = await session('alice');
    rejectAtUpstream.add(alice.idpTokens.accessToken);
    idp.failRefresh('invalid_grant');
    try {
      const res = await call('kube', alice.accessToken);
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
      await res.text();
      assert.equal(await gw.stores.sessions.get(alice.sessionId), undefined);
    } finally {
      idp.failRefresh(null);
    }
  });

  test('invalid_grant at the IdP: 401 with the challenge (sign in again) and the session is gone', async () => {
    const alice = await session('alice');
    await nearExpiry(alice.sessionId);
    idp.failRefresh('invalid_grant');
    const rejectedBefore = await idpRefreshes('rejected');
    try {
      const res = await call('kube', alice.accessToken);
      assert.equal(res.status, 401);
      assert.equal((await idpRefreshes('rejected')) - rejectedBefore, 1);
      const challenge = res.headers.get('www-authenticate') ?? '';
      assert.match(challenge, new RegExp(`resource_metadata="${gw.url}.well-known/oauth-protected-resource/kube/mcp"`));
      assert.match(challenge, /error="invalid_token"/);
      assert.equal(await gw.stores.sessions.get(alice.sessionId), undefined);
      assert.equal(await gw.stores.idpTokens.get(alice.sessionId), undefined);
      assert.equal((await call('kube', alice.accessToken)).status, 401, 'our token died with the session');
    } finally {
      idp.failRefresh(null);
    }
  });

  test('the IdP down during a refresh: 503 with Retry-After, the session and its tokens survive, and it recovers', async () => {
    const alice = await session('alice');
    await nearExpiry(alice.sessionId);
    const before = await gw.stores.idpTokens.get(alice.sessionId);
    const unavailableBefore = await idpRefreshes('unavailable');
    idp.failRefresh('down');
    const answered503 = await call('kube', alice.accessToken);
    assert.equal(answered503.status, 503);
    assert.ok(Number(answered503.headers.get('retry-after')) > 0);
    idp.failRefresh(null);
    await idp.stop();
    try {
      assert.equal((await call('kube', alice.accessToken)).status, 503, 'connection refused is an outage too');
    } finally {
      await idp.start();
    }
    assert.ok(await gw.stores.sessions.get(alice.sessionId));
    assert.deepEqual(await gw.stores.idpTokens.get(alice.sessionId), before);
    assert.equal((await idpRefreshes('unavailable')) - unavailableBefore, 2, 'a 503 from the IdP and a refused connection');
    const recovered = await call('kube', alice.accessToken);
    assert.equal(recovered.status, 200, await recovered.text());
    secrets.push((await gw.stores.idpTokens.get(alice.sessionId))!.accessToken);
  });
});

describe('mode id_token', () => {
  test('the upstream sees the session’s IdP ID token', async () => {
    const bob = await session('bob', 'sso');
    const res = await call('sso', bob.accessToken);
    assert.equal(res.status, 200, await res.text());
    const sent = seen().at(-1)!.replace(/^Bearer /, '');
    assert.equal(sent, bob.idpTokens.idToken);
    const claims = decodeJwt(sent);
    assert.equal(claims.iss, idp.issuer);
    assert.equal(claims.aud, idp.clientId);
    assert.equal(claims.sub, 'bob');
  });
});

describe('logs', () => {
  test('no IdP token and none of ours was logged', () => {
    const text = gw.logs.text();
    assert.ok(secrets.length > 10);
    for (const secret of secrets) assert.ok(!text.includes(secret), 'a token reached the log');
  });
});
