/**
 * Streaming proofs, shown by ordering and by the upstream's own view, never by
 * durations: each SSE event reaches the agent before the next one is sent; an agent that goes
 * away aborts the upstream request; an agent that stops reading holds the upstream back.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request, type IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { startRawUpstream, waitFor, type RawUpstream } from '../support/mcp-upstream.ts';
import { metricValue, scrapeMetrics } from '../support/metrics.ts';

const EVENTS = 4;
const SPACING_MS = 300;
const BULK_BYTES = 64 * 1024 * 1024;
const BULK_CHUNK = Buffer.alloc(64 * 1024, 'x');

/** What the upstream did. */
const sent: number[] = []; // performance.now() just before event k was written
let bulk = { written: 0, waitedForDrain: 0, done: false };

describe('streaming through the gateway', () => {
  let upstream: RawUpstream;
  let gateway: TestGateway;

  before(async () => {
    upstream = await startRawUpstream(async (req, res) => {
      const path = new URL(req.url!, 'http://x').pathname;
      if (path === '/silent/mcp') return; // never answers: the agent leaves first
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.flushHeaders();
      if (path === '/spaced/mcp') {
        for (let k = 0; k < EVENTS; k++) {
          if (k > 0) await sleep(SPACING_MS);
          sent[k] = performance.now();
          res.write(`id: ${k}\ndata: {"k":${k}}\n\n`);
        }
        res.end();
      } else if (path === '/endless/mcp') {
        for (let k = 0; !res.destroyed; k++) {
          res.write(`id: ${k}\ndata: {"k":${k}}\n\n`);
          await sleep(50);
        }
      } else if (path === '/bulk/mcp') {
        while (bulk.written < BULK_BYTES && !res.destroyed) {
          bulk.written += BULK_CHUNK.length;
          if (!res.write(BULK_CHUNK)) {
            bulk.waitedForDrain++;
            await new Promise((resolve) => res.once('drain', resolve));
          }
        }
        bulk.done = true;
        res.end();
      }
    });
    const url = (name: string) => new URL(`/${name}/mcp`, upstream.url);
    gateway = await startGateway({
      upstreams: [
        { name: 'spaced', url: url('spaced') },
        { name: 'endless', url: url('endless') },
        { name: 'bulk', url: url('bulk') },
        { name: 'silent', url: url('silent') },
      ],
    });
  });

  after(async () => {
    await gateway.close();
    await upstream.close();
  });

  function open(name: string): Promise<{ res: IncomingMessage; cancel(): void }> {
    return new Promise((resolve, reject) => {
      const req = request(gateway.mcpUrl(name), { headers: { accept: 'text/event-stream', 'mcp-session-id': 's1' }, agent: false }, (res) => {
        resolve({ res, cancel: () => req.destroy() });
      });
      req.on('error', reject);
      req.end();
    });
  }

  it('writes each SSE event to the agent as it arrives: event k is received before event k+1 is sent', async () => {
    const { res } = await open('spaced');
    assert.equal(res.headers['x-accel-buffering'], 'no');
    const received: number[] = [];
    let buffer = '';
    for await (const chunk of res as AsyncIterable<Buffer>) {
      buffer += chunk.toString('utf8');
      let end;
      while ((end = buffer.indexOf('\n\n')) !== -1) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const k = Number(/data: \{"k":(\d+)\}/.exec(event)![1]);
        received[k] = performance.now();
      }
    }
    assert.equal(received.length, EVENTS);
    for (let k = 0; k < EVENTS - 1; k++) {
      assert.ok(received[k]! < sent[k + 1]!, `event ${k} reached the agent before event ${k + 1} was sent`);
    }
  });

  it('aborts the upstream request when the agent disconnects mid-stream', async () => {
    const { res, cancel } = await open('endless');
    await new Promise((resolve) => res.once('data', resolve));
    const record = upstream.requests.find((r) => r.url === '/endless/mcp')!;
    assert.equal(record.aborted, false);
    cancel();
    await waitFor(() => record.aborted, 'the upstream to see its request aborted');
    const health = await fetch(new URL('/healthz', gateway.url));
    assert.equal(health.status, 200, 'the gateway is still serving');
  });

  it('counts a tools/call the agent left before the upstream answered as cancelled', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: {} } });
    const req = request(gateway.mcpUrl('silent'), { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, agent: false });
    req.on('error', () => undefined);
    req.end(body);
    await waitFor(() => upstream.requests.some((r) => r.url === '/silent/mcp'), 'the upstream to see the call');
    req.destroy();
    const record = upstream.requests.find((r) => r.url === '/silent/mcp')!;
    await waitFor(() => record.aborted, 'the upstream to see its request aborted');
    const labels = { upstream: 'silent', tool: 'other', outcome: 'cancelled' };
    for (let i = 0; i < 100 && metricValue(await scrapeMetrics(gateway.url), 'mcpgate_tool_calls_total', labels) === 0; i++) await sleep(20);
    const metrics = await scrapeMetrics(gateway.url);
    assert.equal(metricValue(metrics, 'mcpgate_tool_calls_total', labels), 1);
    assert.equal(metricValue(metrics, 'mcpgate_tool_calls_total', { ...labels, outcome: 'error' }), 0);
  });

  it('holds the upstream back while the agent does not read (no buffering of a 64 MB stream)', async (t) => {
    bulk = { written: 0, waitedForDrain: 0, done: false };
    const { res } = await open('bulk');
    res.pause();
    // Wait until the upstream is stuck: waiting for 'drain', nothing written for 10 polls in a row.
    let last = -1;
    let still = 0;
    await waitFor(() => {
      still = bulk.written === last ? still + 1 : 0;
      last = bulk.written;
      return still >= 10 && bulk.waitedForDrain > 0;
    }, 'the upstream to stall', 10_000);
    const stalledAt = bulk.written;
    assert.ok(bulk.waitedForDrain > 0, 'the upstream\'s write() returned false: it had to wait for drain');
    assert.ok(!bulk.done, 'the upstream could not finish while the agent was not reading');
    // What was written fits in the kernel's socket buffers along the path, not in the gateway's heap.
    assert.ok(stalledAt < BULK_BYTES / 2, `only socket buffers' worth was written (${(stalledAt / 1048576).toFixed(1)} MB of 64)`);
    t.diagnostic(`the upstream stalled after ${(stalledAt / 1048576).toFixed(1)} MB`);

    let received = 0;
    res.on('data', (chunk: Buffer) => (received += chunk.length));
    res.resume();
    await new Promise((resolve) => res.once('end', resolve));
    assert.equal(received, BULK_BYTES, 'every byte arrived once the agent read again');
    assert.ok(bulk.done);
  });
});
