/**
 * Work before authentication and the global bound on buffered bodies, attacked over real sockets
 * against the real gateway (with login, our real token endpoint) and a real upstream:
 * - a burst of large unauthenticated POSTs gets its 401s without the gateway buffering (or even
 *   receiving) the bodies: memory stays flat;
 * - authenticated requests past `server.maxBodyBytesInFlight` get 503 + Retry-After as a JSON-RPC
 *   error, and room comes back when the held requests finish.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { login, registerClient, startAuthGateway, type AuthGateway } from '../authserver/fixture.ts';
import { answerLikeMcp, startRawUpstream, waitFor, type RawUpstream } from '../support/mcp-upstream.ts';
import { metricValue, scrapeMetrics } from '../support/metrics.ts';

const MiB = 1024 * 1024;

let gw: AuthGateway;
let upstream: RawUpstream;
/** Requests the upstream holds (no answer) until the test lets them go. */
let holding = false;
const held: Array<() => void> = [];

before(async () => {
  upstream = await startRawUpstream(async (req, res, recorded) => {
    if (holding && req.headers['x-hold'] === '1') await new Promise<void>((resolve) => held.push(resolve));
    return answerLikeMcp(req, res, recorded);
  });
  gw = await startAuthGateway({
    upstreams: [{ name: 'kube', url: upstream.url }],
    // 4 MiB bodies allowed one at a time, 9 MiB of them in flight at once.
    server: { maxBodyBytes: 4 * MiB, maxBodyBytesInFlight: 9 * MiB },
  });
});
after(async () => {
  for (const release of held.splice(0)) release();
  await gw?.close();
  await upstream?.close();
});

/** A valid JSON-RPC request of about `size` bytes (so parsing it, before the fix, succeeded and cost memory). */
function bigRpc(size: number, id = 1): Buffer {
  const head = `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"echo","arguments":{"pad":"`;
  const tail = '"}}}';
  return Buffer.concat([Buffer.from(head), Buffer.alloc(size - head.length - tail.length, 0x61), Buffer.from(tail)]);
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One POST on its own connection; `chunked` sends no Content-Length. A connection the gateway closes after answering is fine. */
function post(body: Buffer, options: { token?: string; chunked?: boolean; hold?: boolean } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (options.hold) headers['x-hold'] = '1';
    if (!options.chunked) headers['content-length'] = String(body.length);
    const req = request(new URL('/kube/mcp', gw.url), { method: 'POST', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    // EPIPE/ECONNRESET while still sending, after the answer came: the gateway stopped reading, as it should.
    req.on('error', reject);
    req.end(body);
  });
}

describe('the token is checked before the body is read', () => {
  test('100 concurrent unauthenticated 4 MB POSTs: every one gets its 401 challenge, and memory stays flat', async (t) => {
    const body = bigRpc(4 * MiB - 16);
    let peakArrayBuffers = 0;
    let peakRss = 0;
    const sample = () => {
      const usage = process.memoryUsage();
      peakArrayBuffers = Math.max(peakArrayBuffers, usage.arrayBuffers);
      peakRss = Math.max(peakRss, usage.rss);
    };
    globalThis.gc?.();
    const base = process.memoryUsage();
    const sampler = setInterval(sample, 2);
    let answers: Answer[];
    try {
      answers = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          // No token, a malformed one, a forged one; some chunked (length unknown).
          post(body, { token: i % 3 === 0 ? undefined : i % 3 === 1 ? 'not-a-jwt' : 'eyJhbGciOiJub25lIn0.e30.', chunked: i % 10 === 0 }),
        ),
      );
    } finally {
      clearInterval(sampler);
    }
    sample();
    assert.deepEqual(
      answers.map((a) => a.status),
      Array(100).fill(401),
    );
    for (const answer of answers) {
      assert.match(String(answer.headers['www-authenticate']), /^Bearer resource_metadata="[^"]+\/\.well-known\/oauth-protected-resource\/kube\/mcp"/);
      assert.equal((JSON.parse(answer.body) as { jsonrpc: string }).jsonrpc, '2.0', 'a JSON-RPC error, as every refusal on the MCP path');
    }
    assert.equal(upstream.requests.length, 0, 'nothing reached the upstream');
    const grewArrayBuffers = (peakArrayBuffers - base.arrayBuffers) / MiB;
    const grewRss = (peakRss - base.rss) / MiB;
    // 100 bodies of 4 MiB are 400 MiB: buffering them (as before) shows here whatever the GC does.
    assert.ok(grewArrayBuffers < 32, `Buffer memory grew by ${grewArrayBuffers.toFixed(1)} MiB during the burst`);
    assert.ok(grewRss < 150, `RSS grew by ${grewRss.toFixed(1)} MiB during the burst`);
    assert.equal(metricValue(await scrapeMetrics(gw.url), 'mcpgate_request_body_bytes_in_flight'), 0);
    t.diagnostic(`peak growth: ${grewArrayBuffers.toFixed(1)} MiB of Buffers, ${grewRss.toFixed(1)} MiB RSS`);
  });

  test('a small unauthenticated POST is refused with its JSON-RPC id', async () => {
    const answer = await post(Buffer.from('{"jsonrpc":"2.0","id":42,"method":"tools/list"}'));
    assert.equal(answer.status, 401);
    assert.equal((JSON.parse(answer.body) as { id: number }).id, 42);
  });
});

describe('server.maxBodyBytesInFlight', () => {
  test('authenticated requests past the bound get 503 + Retry-After (JSON-RPC error); room comes back when the held ones finish', async () => {
    const client = await registerClient(gw);
    const { accessToken } = await login(gw, client, { resource: gw.resource('kube') });
    const from = upstream.requests.length;
    holding = true;
    // Two 4 MiB bodies are booked while the upstream holds their requests: 8 of the 9 MiB.
    const first = post(bigRpc(4 * MiB - 16, 1), { token: accessToken, hold: true });
    const second = post(bigRpc(4 * MiB - 16, 2), { token: accessToken, hold: true });
    await waitFor(() => held.length === 2, 'the upstream to hold two requests', 20_000);
    assert.equal(metricValue(await scrapeMetrics(gw.url), 'mcpgate_request_body_bytes_in_flight'), 2 * (4 * MiB - 16));

    for (const chunked of [false, true]) {
      const refused = await post(bigRpc(2 * MiB, 3), { token: accessToken, chunked });
      assert.equal(refused.status, 503, refused.body);
      assert.ok(Number(refused.headers['retry-after']) > 0, 'Retry-After says when to come back');
      const error = JSON.parse(refused.body) as { jsonrpc: string; error: { code: number; message: string } };
      assert.equal(error.jsonrpc, '2.0');
      assert.match(error.error.message, /too many request bodies at once; retry shortly/);
    }
    // A small one still fits.
    const small = await post(Buffer.from('{"jsonrpc":"2.0","id":4,"method":"tools/list"}'), { token: accessToken });
    assert.equal(small.status, 200, small.body);

    holding = false;
    for (const release of held.splice(0)) release();
    assert.deepEqual((await Promise.all([first, second])).map((a) => a.status), [200, 200]);
    assert.equal(upstream.requests.length - from, 3, 'the refused requests never reached the upstream');
    assert.equal(metricValue(await scrapeMetrics(gw.url), 'mcpgate_request_body_bytes_in_flight'), 0, 'every booked byte was released');
    const again = await post(bigRpc(4 * MiB - 16, 5), { token: accessToken });
    assert.equal(again.status, 200, 'room again once the held requests finished');
  });
});
