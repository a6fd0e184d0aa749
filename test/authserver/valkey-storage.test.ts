/**
 * The authorization server on `storage.kind: valkey` (a real redis-server): logins, refreshes and
 * the gateway path work across the wire; when the server goes away, /readyz fails and the token
 * endpoint answers 503 with Retry-After, never "invalid grant"; the session survives the outage.
 * Records written straight into Valkey without the store key grant nothing.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { login, postForm, registerClient, seedLogin, startAuthGateway, type AuthGateway } from './fixture.ts';
import { tokenHash } from '../../src/authserver/records/stores.ts';
import { pkceChallenge } from '../../src/authserver/tokens/mint.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';
import { metricValue, scrapeMetrics } from '../support/metrics.ts';

let redis: RedisServer;
let upstream: RawUpstream;
let gw: AuthGateway;
before(async () => {
  redis = await startRedis();
  upstream = await startRawUpstream();
  gw = await startAuthGateway({ upstreams: [{ name: 'kube', url: upstream.url }], valkeyUrl: redis.url });
});
after(async () => {
  await gw?.close();
  await upstream?.close();
  await redis?.stop();
});

test('login, refresh and the gateway path on Valkey; an outage is a 503, not a logout', async () => {
  assert.equal((await fetch(`${gw.url}readyz`)).status, 200);
  const client = await registerClient(gw);
  const tokens = await login(gw, client, { resource: gw.resource('kube') });
  const call = () => fetch(`${gw.url}kube/mcp`, { method: 'POST', headers: { authorization: `Bearer ${tokens.accessToken}`, 'content-type': 'application/json', accept: 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
  assert.equal((await call()).status, 200);

  // The token endpoint's first store operation is its rate limiter's set read (`members`); the gateway path's a `get`.
  const failedGets = async () => {
    const text = await scrapeMetrics(gw.url);
    return metricValue(text, 'mcpgate_store_errors_total', { op: 'get' }) + metricValue(text, 'mcpgate_store_errors_total', { op: 'members' });
  };
  const getsBefore = await failedGets();
  redis.pause();
  try {
    const ready = await fetch(`${gw.url}readyz`);
    assert.equal(ready.status, 503);
    const refresh = await postForm(`${gw.issuer}/oauth/token`, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: tokens.refreshToken });
    assert.equal(refresh.status, 503);
    assert.equal(refresh.body.error, 'temporarily_unavailable');
    assert.ok(Number(refresh.headers.get('retry-after')) > 0);
    assert.equal((await call()).status, 503, 'the gateway path cannot check the session: 503, not 401');
    // Counted per failed operation, whatever answer it ended in (here the token endpoint's and the gateway path's).
    assert.ok((await failedGets()) - getsBefore >= 2);
  } finally {
    redis.resume();
  }

  const refreshed = await postForm(`${gw.issuer}/oauth/token`, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: tokens.refreshToken });
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  assert.equal((await fetch(`${gw.url}readyz`)).status, 200);
});

// Security review item 6: the authorization server's records carry integrity. Someone who can
// write to Valkey (but does not hold the store key) writes records straight into it.
test('a code forged in Valkey is not redeemable, a client record rewritten there is not a client', async () => {
  const client = await registerClient(gw);
  const seeded = await seedLogin(gw, { ...client, resource: gw.resource('kube'), subject: 'victim' });
  // A code of the attacker's choosing for the victim's live session, written as plain JSON.
  const forged = 'forged-code-0123456789abcdefghijklmnopqrstuvwxyz';
  const verifier = 'v'.repeat(43);
  const record = {
    clientId: client.clientId, redirectUri: client.redirectUri, codeChallenge: pkceChallenge(verifier), resource: gw.resource('kube'),
    scopes: ['mcp'], subject: 'victim', sessionId: seeded.sessionId, createdAt: gw.now(),
  };
  await gw.store.set(`code:${tokenHash(forged)}`, JSON.stringify({ live: record }), 60_000);
  const redeemed = await postForm(`${gw.issuer}/oauth/token`, {
    grant_type: 'authorization_code', client_id: client.clientId, code: forged, redirect_uri: client.redirectUri, code_verifier: verifier, resource: gw.resource('kube'),
  });
  assert.equal(redeemed.status, 400, JSON.stringify(redeemed.body));
  assert.equal(redeemed.body.error, 'invalid_grant');
  assert.ok(gw.logs.records().some((l) => String(l.msg).startsWith('a stored record did not open') && l.record === 'code'), 'the operator is told');

  // The registered client rewritten in place with the attacker's redirect URI added.
  const stored = await gw.stores.clients.get(client.clientId);
  assert.ok(stored);
  await gw.store.set(`client:${client.clientId}`, JSON.stringify({ ...stored, redirectUris: [...stored.redirectUris, 'https://attacker.example/cb'] }), 86_400_000);
  const authorize = new URL(`${gw.issuer}/oauth/authorize`);
  for (const [k, v] of Object.entries({
    response_type: 'code', client_id: client.clientId, redirect_uri: 'https://attacker.example/cb', code_challenge: pkceChallenge(verifier),
    code_challenge_method: 'S256', resource: gw.resource('kube'), state: 's',
  })) authorize.searchParams.set(k, v);
  const res = await fetch(authorize, { redirect: 'manual' });
  assert.equal(res.status, 400);
  assert.equal(res.headers.get('location'), null, 'nothing is sent to the attacker');
  assert.match(await res.text(), /not registered here/);
});

test("a user's index in Valkey names no session, and sign-out everywhere still ends them all", async () => {
  const client = await registerClient(gw);
  const first = await login(gw, client, { resource: gw.resource('kube'), subject: 'bob' });
  const second = await login(gw, client, { resource: gw.resource('kube'), subject: 'bob' });
  const members = await gw.store.members('user:bob:sessions');
  assert.equal(members.length, 2);
  for (const m of members) {
    assert.ok(!m.includes(first.sessionId) && !m.includes(second.sessionId), 'no session id in the index');
    assert.equal(await gw.stores.sessions.get(m), undefined, 'an index entry is not usable as a session id');
  }
  const res = await fetch(`${gw.issuer}/oauth/logout/all`, { method: 'POST', headers: { authorization: `Bearer ${first.accessToken}` } });
  assert.equal(res.status, 204);
  assert.equal(await gw.stores.sessions.get(first.sessionId), undefined);
  assert.equal(await gw.stores.sessions.get(second.sessionId), undefined);
  assert.deepEqual(await gw.store.members('user:bob:sessions'), []);
});
