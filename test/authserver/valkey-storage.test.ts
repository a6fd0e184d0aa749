/**
 * The authorization server on `storage.kind: valkey` (a real redis-server): logins, refreshes and
 * the gateway path work across the wire; when the server goes away, /readyz fails and the token
 * endpoint answers 503 with Retry-After, never "invalid grant"; the session survives the outage.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { login, postForm, registerClient, startAuthGateway, type AuthGateway } from './fixture.ts';
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
