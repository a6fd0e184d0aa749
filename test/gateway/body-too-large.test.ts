/**
 * A body over `server.maxBodyBytes` (issue 13): the agent must be able to read the 413. Node's
 * fetch (undici, which the SDKs use) sends the whole body before it reads the answer; a gateway
 * that answered and closed the connection while the body was still coming made it fail with
 * EPIPE / ECONNRESET ("fetch failed") instead of showing the 413. The gateway now reads the rest
 * of such a body and discards it (bounded in bytes and time) before it answers and closes.
 *
 * Seen by the clients agents use: Node's fetch, and the SDK client's Streamable HTTP transport,
 * with 5 MB and 12 MB POSTs against a gateway whose limit is 4 MiB — on an open upstream (no
 * login) and with a valid token (login). An unauthenticated request is still refused without its
 * body being read (its 401 may cut the connection: the agent then authenticates and retries).
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { login, registerClient, startAuthGateway, type AuthGateway } from '../authserver/fixture.ts';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';
import { metricValue, scrapeMetrics } from '../support/metrics.ts';

const MiB = 1024 * 1024;
const MB = 1_000_000;

let upstream: RawUpstream;
let open: TestGateway;
let authed: AuthGateway;
let token: string;

before(async () => {
  upstream = await startRawUpstream();
  open = await startGateway({ upstreams: [{ name: 'notes', url: upstream.url }], server: { maxBodyBytes: 4 * MiB } });
  authed = await startAuthGateway({ upstreams: [{ name: 'notes', url: upstream.url }], server: { maxBodyBytes: 4 * MiB } });
  const client = await registerClient(authed);
  token = (await login(authed, client, { resource: authed.resource('notes') })).accessToken;
});
after(async () => {
  await authed?.close();
  await open?.close();
  await upstream?.close();
});

/**
 * Node's fetch as an agent on a real network uses it: the body leaves at link speed (about
 * 64 MB/s here), not at loopback speed, so the gateway answers while the agent is still sending
 * — the case that broke. The declared `content-length` stays, as for a string body.
 */
const linkFetch: typeof fetch = (input, init) => {
  const body = init?.body;
  if (typeof body !== 'string') return fetch(input, init);
  const bytes = Buffer.from(body);
  let offset = 0;
  const paced = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (offset >= bytes.length) return controller.close();
      await new Promise((resolve) => setTimeout(resolve, 1));
      controller.enqueue(bytes.subarray(offset, offset + 64 * 1024));
      offset += 64 * 1024;
    },
  });
  const headers = new Headers(init?.headers);
  headers.set('content-length', String(bytes.length));
  return fetch(input, { ...init, headers, body: paced, duplex: 'half' } as RequestInit);
};

/** A `tools/call` of `size` bytes as an agent would send a large argument. */
function bigCall(size: number, id: number): JSONRPCMessage & { id: number } {
  const head = JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { text: '' } } });
  return { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { text: 'a'.repeat(size - head.length) } } };
}

const targets = () => [
  { name: 'open upstream', url: new URL('/notes/mcp', open.url), headers: {} as Record<string, string> },
  { name: 'with a valid token', url: new URL('/notes/mcp', authed.url), headers: { authorization: `Bearer ${token}` } },
];

describe('a body over maxBodyBytes is answered 413, and the agent reads it', () => {
  for (const size of [5 * MB, 12 * MB]) {
    test(`Node's fetch, ${size / MB} MB: status 413 and a JSON-RPC error body, no EPIPE`, async () => {
      for (const target of targets()) {
        const from = upstream.requests.length;
        const body = JSON.stringify(bigCall(size, 7));
        const started = Date.now();
        // A fetch failure (EPIPE, ECONNRESET: "fetch failed") rejects here and fails the test.
        const res = await linkFetch(target.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...target.headers },
          body,
        });
        assert.equal(res.status, 413, target.name);
        const answer = (await res.json()) as { jsonrpc: string; id: unknown; error: { code: number; message: string; data: { error: string } } };
        assert.equal(answer.jsonrpc, '2.0', target.name);
        assert.equal(answer.error.code, -32600);
        assert.equal(answer.error.message, `request body exceeds ${4 * MiB} bytes`);
        assert.equal(answer.error.data.error, 'payload_too_large');
        assert.equal(res.headers.get('connection'), 'close', 'the connection is not reused after a refused body');
        assert.equal(upstream.requests.length, from, 'nothing reached the upstream');
        assert.ok(Date.now() - started < 10_000, `${target.name}: answered in ${Date.now() - started} ms`);
      }
    });

    test(`the SDK client's transport, ${size / MB} MB: the error is the HTTP 413, not a broken pipe`, async () => {
      for (const target of targets()) {
        const transport = new StreamableHTTPClientTransport(target.url, { requestInit: { headers: target.headers }, fetch: linkFetch });
        await transport.start();
        try {
          const error = await transport.send(bigCall(size, 8)).then(
            () => assert.fail('expected the send to fail with 413'),
            (e: unknown) => e,
          );
          assert.ok(error instanceof StreamableHTTPError, `${target.name}: ${String(error)} (cause: ${String((error as { cause?: unknown }).cause)})`);
          assert.equal(error.code, 413, `${target.name}: ${error.message}`);
          assert.match(error.message, /request body exceeds 4194304 bytes/);
        } finally {
          await transport.close();
        }
      }
    });
  }

  test('the gateway holds none of the discarded bytes, and serves the same client right after', async () => {
    const metrics = await scrapeMetrics(authed.url);
    assert.equal(metricValue(metrics, 'mcpgate_request_body_bytes_in_flight'), 0);
    const res = await fetch(new URL('/notes/mcp', authed.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/list' }),
    });
    assert.equal(res.status, 200, await res.text());
  });
});

describe('what is discarded is bounded', () => {
  /** Starts a POST to the open gateway, writes `first`, then keeps writing `trickle` every 100 ms until answered. */
  function oversized(headers: Record<string, string>, first: Buffer, trickle?: Buffer): Promise<{ status: number; body: string; ms: number }> {
    const started = Date.now();
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const req = request(new URL('/notes/mcp', open.url), { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, agent: false }, (res) => {
        clearInterval(timer);
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8'), ms: Date.now() - started }));
        res.on('error', reject);
        req.destroy();
      });
      // The connection is cut while this client still sends: expected here, the answer is what counts.
      req.on('error', () => undefined);
      req.write(first);
      if (trickle) timer = setInterval(() => req.write(trickle), 100);
    });
  }

  test('a declared length past the discard bound is answered at once, without reading it', async () => {
    const answer = await oversized({ 'content-length': String(64 * MiB) }, Buffer.alloc(64 * 1024, 0x61));
    assert.equal(answer.status, 413, answer.body);
    assert.ok(answer.ms < 2_000, `answered in ${answer.ms} ms`);
  });

  test('a body that never ends is answered after the discard time limit (5 s), not held open', async () => {
    const answer = await oversized({ 'transfer-encoding': 'chunked' }, Buffer.alloc(5 * MiB, 0x61), Buffer.alloc(1024, 0x61));
    assert.equal(answer.status, 413, answer.body);
    assert.ok(answer.ms >= 4_500 && answer.ms < 9_000, `answered in ${answer.ms} ms`);
  });
});
