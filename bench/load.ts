import { createRequire } from 'node:module';
import { Agent, request as httpRequest, type ClientRequest } from 'node:http';
import { Pool } from 'undici';
import { serveParent } from './children.ts';

/**
 * The load generator, one child process driven by bench/run.ts:
 * - `saturate`: autocannon, closed loop, N connections, for throughput at saturation;
 * - `rate`: an open-loop probe at a fixed request rate that times each request with hrtime
 *   (autocannon's latency histogram counts whole milliseconds, too coarse for a 0.25 ms target);
 * - `sseFirst`: sequential GETs timing the first SSE event;
 * - `sequential`: POSTs one at a time (while the gateway counts its store calls);
 * - `openStreams` / `closeStreams`: idle SSE streams held open for the memory figures.
 * The POST phases first initialize the MCP session they name, once per target.
 */

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
}
type Autocannon = (options: Record<string, unknown>) => Promise<AutocannonResult>;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

/** A small MCP tools/call, as an agent sends it. */
const RPC_BODY = JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: { text: 'hello' } } });
const RPC_HEADERS = {
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  'mcp-protocol-version': '2025-06-18',
  'mcp-session-id': '3f2c9a7e-bench-session-0001',
};

/** `extra` plus the `authorization` argument (idp mode: our access token), when the parent passed one. */
function withAuth(args: Record<string, unknown>, extra: Record<string, string>): Record<string, string> {
  return typeof args.authorization === 'string' ? { ...extra, authorization: args.authorization } : extra;
}

const INITIALIZE_BODY = JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench', version: '1' } } });
const initialized = new Set<string>();

/**
 * Starts the MCP session the requests name, once per URL and credential, as an agent does before
 * its first call: the gateway then knows the session (its capability record, its owner), so the
 * load measures a session in use, not one the gateway has never seen.
 */
async function initialize(args: Record<string, unknown>): Promise<void> {
  const key = `${String(args.url)} ${String(args.authorization ?? '')}`;
  if (initialized.has(key)) return;
  const url = new URL(String(args.url));
  const pool = new Pool(url.origin, { connections: 1 });
  const { 'mcp-session-id': _, 'mcp-protocol-version': __, ...headers } = RPC_HEADERS;
  const res = await pool.request({ method: 'POST', path: url.pathname, headers: withAuth(args, headers), body: INITIALIZE_BODY });
  await res.body.dump({ limit: Infinity });
  await pool.close();
  if (res.statusCode !== 200) throw new Error(`initialize answered ${res.statusCode}`);
  if (res.headers['mcp-session-id'] !== RPC_HEADERS['mcp-session-id']) throw new Error('initialize issued no session (bench/upstream.ts names it)');
  initialized.add(key);
}

/** Throughput at saturation: what autocannon gets through in `duration` seconds with `connections` open. */
async function saturate(args: Record<string, unknown>) {
  await initialize(args);
  const result = await autocannon({
    url: String(args.url),
    connections: Number(args.connections),
    duration: Number(args.duration),
    pipelining: 1,
    method: 'POST',
    headers: withAuth(args, RPC_HEADERS),
    body: RPC_BODY,
  });
  const ok = result['2xx'];
  return { ok, rps: ok / result.duration, seconds: result.duration, errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx };
}

/**
 * Open loop at `rate` requests per second for `duration` seconds: requests are issued when due
 * (checked every millisecond), whether or not earlier ones have returned, and each is timed
 * from issue to the last byte of its body. Latencies in ms.
 */
async function fixedRate(args: Record<string, unknown>) {
  await initialize(args);
  const url = new URL(String(args.url));
  const rate = Number(args.rate);
  const durationMs = Number(args.duration) * 1000;
  const pool = new Pool(url.origin, { connections: 64, keepAliveTimeout: 30_000 });
  const headers = withAuth(args, RPC_HEADERS);
  const latencies: number[] = [];
  let errors = 0;
  let sent = 0;
  let maxLagMs = 0;
  const inFlight = new Set<Promise<void>>();
  const start = performance.now();

  const one = async () => {
    const t0 = performance.now();
    try {
      const res = await pool.request({ method: 'POST', path: url.pathname, headers, body: RPC_BODY });
      await res.body.dump({ limit: Infinity });
      if (res.statusCode === 200) latencies.push(performance.now() - t0);
      else errors++;
    } catch {
      errors++;
    }
  };

  await new Promise<void>((resolve) => {
    const tick = () => {
      const elapsed = performance.now() - start;
      const due = Math.min(Math.floor((elapsed * rate) / 1000), Math.floor((durationMs * rate) / 1000));
      if (due - sent > 1) maxLagMs = Math.max(maxLagMs, ((due - sent) * 1000) / rate);
      while (sent < due) {
        sent++;
        const p = one();
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      if (elapsed >= durationMs) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  await Promise.all(inFlight);
  await pool.close();
  return { sent, errors, maxLagMs, ...percentiles(latencies) };
}

/** Median time from a GET to its first SSE event, over `count` sequential requests (after 20 unmeasured). Latencies in ms. */
async function sseFirst(args: Record<string, unknown>) {
  const url = new URL(String(args.url));
  const count = Number(args.count);
  const pool = new Pool(url.origin, { connections: 1, keepAliveTimeout: 30_000 });
  const times: number[] = [];
  for (let i = 0; i < count + 20; i++) {
    const t0 = performance.now();
    const res = await pool.request({ method: 'GET', path: url.pathname, headers: withAuth(args, { accept: 'text/event-stream', 'mcp-protocol-version': '2025-06-18' }) });
    let first = 0;
    let text = '';
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      text += chunk.toString('utf8');
      if (!first && text.includes('\n\n')) first = performance.now();
    }
    if (res.statusCode !== 200 || !first) throw new Error(`SSE GET answered ${res.statusCode} without an event`);
    if (i >= 20) times.push(first - t0);
  }
  await pool.close();
  return percentiles(times);
}

/** `count` POSTs one after the other (the store round trips of one request are counted meanwhile). */
async function sequential(args: Record<string, unknown>) {
  await initialize(args);
  const url = new URL(String(args.url));
  const pool = new Pool(url.origin, { connections: 1, keepAliveTimeout: 30_000 });
  let ok = 0;
  for (let i = 0; i < Number(args.count); i++) {
    const res = await pool.request({ method: 'POST', path: url.pathname, headers: withAuth(args, RPC_HEADERS), body: RPC_BODY });
    await res.body.dump({ limit: Infinity });
    if (res.statusCode === 200) ok++;
  }
  await pool.close();
  return { ok };
}

const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
const streams: ClientRequest[] = [];

/** Opens `count` SSE GETs (`?hold`: the upstream keeps them open) and resolves when each has its first event. */
async function openStreams(args: Record<string, unknown>) {
  const url = new URL(String(args.url));
  url.search = '?hold';
  const count = Number(args.count);
  for (let opened = 0; opened < count; ) {
    const batch = Math.min(100, count - opened);
    await Promise.all(Array.from({ length: batch }, () => openOne(url, withAuth(args, { accept: 'text/event-stream' }))));
    opened += batch;
  }
  return { open: streams.length };
}

function openOne(url: URL, headers: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'GET', agent, headers }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`stream answered ${res.statusCode}`));
      res.once('data', () => resolve());
      res.on('error', () => undefined);
    });
    req.on('error', reject);
    req.end();
    streams.push(req);
  });
}

function closeStreams() {
  for (const req of streams.splice(0)) req.destroy();
  return {};
}

function percentiles(samples: number[]) {
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : NaN);
  return { n: sorted.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted.length ? sorted[sorted.length - 1]! : NaN };
}

serveParent({ saturate, rate: fixedRate, sseFirst, sequential, openStreams, closeStreams }, 'load');
