/**
 * Issue 10, item 4, against the real gateway (`createApp` through `startGateway`, dev mode), the
 * real development IdP and a real metadata-document host on loopback that counts its hits:
 *
 * - the token and revocation endpoints never fetch a metadata document: an https (here, dev mode,
 *   http) client_id no authorization request fetched is an unknown client, however many requests
 *   name it; one the authorization endpoint fetched is found without another fetch;
 * - a failing document is fetched once per failure-cache minute, however many authorization
 *   requests name it;
 * - every route newly limited answers 429 with `Retry-After` past its per-client limit, and past
 *   its global limit for requests from many addresses.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { pkcePair, startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';

let idp: DevIdp;
let docs: RecordingServer;

before(async () => {
  idp = await startDevIdp();
  docs = await startRecordingServer((_req, res, url) => {
    if (url.pathname !== '/agent.json') return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ client_id: `${docs.url}/agent.json`, client_name: 'Doc Agent', redirect_uris: ['http://127.0.0.1/callback'] }));
  });
});
after(async () => {
  await docs?.close();
  await idp?.close();
});

const hits = (path: string) => docs.requests.filter((u) => u.pathname === path).length;

/** A form POST from a chosen loopback source address (127.0.0.0/8 is all ours). */
function post(url: string, form: Record<string, string>, localAddress = '127.0.0.1'): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const body = new URLSearchParams(form).toString();
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', localAddress, headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function authorizeUrl(gateway: TestGateway, clientId: string): string {
  const params = new URLSearchParams({
    client_id: clientId,
    redirect_uri: 'http://127.0.0.1:41234/callback',
    response_type: 'code',
    code_challenge: pkcePair().challenge,
    code_challenge_method: 'S256',
    state: 's',
  });
  return `${gateway.url.origin}/oauth/authorize?${params}`;
}

describe('metadata documents are fetched only by the authorization endpoint', () => {
  let gateway: TestGateway;
  before(async () => {
    gateway = await startGateway({ idp, upstreams: [{ name: 'kube', url: 'http://127.0.0.1:9/mcp', auth: { mode: 'idp' } }] });
  });
  after(() => gateway?.close());

  test('N token and revocation requests naming document URLs cause zero fetches', async () => {
    const valid = `${docs.url}/agent.json`;
    const missing = `${docs.url}/missing.json`;
    for (let i = 0; i < 10; i++) {
      for (const clientId of [valid, missing]) {
        const token = await post(`${gateway.url.origin}/oauth/token`, { grant_type: 'refresh_token', refresh_token: 'x', client_id: clientId });
        assert.equal(token.status, 401);
        assert.equal(JSON.parse(token.body).error, 'invalid_client');
        const revoke = await post(`${gateway.url.origin}/oauth/revoke`, { token: 'x', client_id: clientId });
        assert.equal(revoke.status, 401);
        assert.equal(JSON.parse(revoke.body).error, 'invalid_client');
      }
    }
    assert.equal(hits('/agent.json'), 0);
    assert.equal(hits('/missing.json'), 0);
  });

  test('a document the authorization endpoint fetched is known to the token endpoint, without another fetch', async () => {
    const clientId = `${docs.url}/agent.json`;
    const before = hits('/agent.json');
    const res = await fetch(authorizeUrl(gateway, clientId), { redirect: 'manual' });
    assert.equal(res.status, 302);
    assert.equal(hits('/agent.json'), before + 1);
    const token = await post(`${gateway.url.origin}/oauth/token`, { grant_type: 'refresh_token', refresh_token: 'x', client_id: clientId });
    assert.equal(token.status, 400);
    assert.equal(JSON.parse(token.body).error, 'invalid_grant', 'the client is known; only the refresh token is wrong');
    assert.equal(hits('/agent.json'), before + 1);
  });

  test('repeated authorization requests naming a failing document cause one fetch (per failure-cache minute)', async () => {
    const clientId = `${docs.url}/failing.json`;
    for (let i = 0; i < 10; i++) {
      const res = await fetch(authorizeUrl(gateway, clientId), { redirect: 'manual' });
      assert.equal(res.status, 400);
      assert.match(await res.text(), /HTTP 404/);
    }
    assert.equal(hits('/failing.json'), 1);
  });
});

describe('every unauthenticated route is limited per client and globally', () => {
  let gateway: TestGateway;
  before(async () => {
    gateway = await startGateway({
      idp,
      // An upstream with its own authorization server: the resume route of the connect chain exists.
      upstreams: [{ name: 'saas', url: 'http://127.0.0.1:9/mcp', auth: { mode: 'oauth' } }],
      server: {
        rateLimits: {
          token: { perIp: 3 },
          revoke: { perIp: 100, global: 3 },
          consent: { perIp: 3 },
          authorizeResume: { perIp: 3 },
        },
      },
    });
  });
  after(() => gateway?.close());

  function assertLimited(res: { status: number; headers: Record<string, unknown> }): void {
    assert.equal(res.status, 429);
    const retryAfter = Number(res.headers['retry-after']);
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${String(res.headers['retry-after'])}`);
  }

  test('/oauth/token: 429 with Retry-After past the per-client limit, another address unaffected', async () => {
    const url = `${gateway.url.origin}/oauth/token`;
    for (let i = 0; i < 3; i++) assert.equal((await post(url, { grant_type: 'refresh_token', refresh_token: 'x', client_id: 'nobody' })).status, 401);
    const refused = await post(url, { grant_type: 'refresh_token', refresh_token: 'x', client_id: 'nobody' });
    assertLimited(refused);
    assert.equal(JSON.parse(refused.body).error, 'too_many_requests');
    assert.equal((await post(url, { grant_type: 'refresh_token', refresh_token: 'x', client_id: 'nobody' }, '127.0.0.2')).status, 401);
  });

  test('/oauth/revoke: 429 with Retry-After past the global limit, from any address', async () => {
    const url = `${gateway.url.origin}/oauth/revoke`;
    for (let i = 0; i < 3; i++) assert.equal((await post(url, { token: 'x', client_id: 'nobody' }, `127.0.1.${i + 1}`)).status, 401);
    assertLimited(await post(url, { token: 'x', client_id: 'nobody' }, '127.0.1.9'));
  });

  test('/oauth/consent: 429 page with Retry-After past the per-client limit', async () => {
    const url = `${gateway.url.origin}/oauth/consent`;
    for (let i = 0; i < 3; i++) assert.notEqual((await post(url, { consent: 'x', action: 'approve' })).status, 429);
    const refused = await post(url, { consent: 'x', action: 'approve' });
    assertLimited(refused);
    assert.match(refused.body, /Too many requests/);
  });

  test('/oauth/authorize/resume: 429 page with Retry-After past the per-client limit', async () => {
    const url = `${gateway.url.origin}/oauth/authorize/resume?c=x&u=saas`;
    for (let i = 0; i < 3; i++) assert.notEqual((await fetch(url, { redirect: 'manual' })).status, 429);
    const refused = await fetch(url, { redirect: 'manual' });
    assertLimited({ status: refused.status, headers: Object.fromEntries(refused.headers) });
    assert.match(await refused.text(), /Too many requests/);
  });
});
