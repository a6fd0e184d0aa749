import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { randomFillSync } from 'node:crypto';

/** RFC 9110 §7.6.1 hop-by-hop headers, plus ones only meaningful between the agent and us. */
const REQUEST_DROP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer',
  'transfer-encoding', 'upgrade', 'host', 'content-length', 'expect', 'http2-settings',
  // Never pass the agent's credentials or cookies upstream (no token passthrough).
  'authorization', 'cookie',
  // Origin was checked here; upstreams judge our request, not the agent's browser context.
  'origin', 'referer',
  // Rewritten by us from what we trust.
  'forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-real-ip',
]);

const RESPONSE_DROP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  // Cookies an upstream sets would land on our domain, shared by every upstream.
  'set-cookie',
  // The agent authenticates to us, never to the upstream: an upstream's challenge would send the
  // agent (and its next token) to an authorization server we do not vouch for. Step-up 403s and
  // 401s are held and answered by the credential source before any header is written.
  'www-authenticate',
  // Mapped to our own path or dropped (relocate, below).
  'location', 'content-location',
]);

const TRACEPARENT = /^[\da-f]{2}-[\da-f]{32}-[\da-f]{16}-[\da-f]{2}$/;

/**
 * Random bytes for new trace contexts, drawn from the CSPRNG 256 ids at a time: two
 * `randomBytes` calls per request cost more than the rest of the header rewrite (bench/README.md).
 */
const traceRandom = Buffer.alloc(24 * 256);
let traceOffset = traceRandom.length;

/** A new W3C traceparent (version 00, sampled): 16 random bytes of trace id, 8 of parent id. */
function newTraceparent(): string {
  if (traceOffset === traceRandom.length) {
    randomFillSync(traceRandom);
    traceOffset = 0;
  }
  const at = traceOffset;
  traceOffset += 24;
  return `00-${traceRandom.toString('hex', at, at + 16)}-${traceRandom.toString('hex', at + 16, at + 24)}-01`;
}

/** The facts about the agent's request that upstream headers are built from. */
export interface ForwardContext {
  clientIp: string;
  proto: string;
  host: string | undefined;
}

/** The Connection values nearly every message carries, parsed once (read-only: callers only ask `has`). */
const COMMON_CONNECTION = new Map(['keep-alive', 'close'].map((token) => [token, new Set([token])]));

/** Names listed in a Connection header are hop-by-hop for this message too. */
function connectionTokens(headers: IncomingHttpHeaders): Set<string> | undefined {
  const value = headers.connection;
  if (!value) return undefined;
  // Two per proxied request (the agent's and the upstream's): a Set and four arrays each, for
  // the same one token almost every time.
  const common = typeof value === 'string' ? COMMON_CONNECTION.get(value) : undefined;
  if (common !== undefined) return common;
  return new Set(String(value).split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
}

/**
 * The headers sent upstream: the agent's headers minus hop-by-hop, credentials, cookies and
 * proxy headers; plus X-Forwarded-*, a traceparent, and the upstream credential.
 * `Mcp-Session-Id`, `MCP-Protocol-Version`, `Last-Event-ID`, `Accept`, `Mcp-Method`/`Mcp-Name`
 * pass untouched (Node lower-cases names, so any casing the agent used arrives).
 * `traceparent`, given with tracing on, names the upstream-call span as the parent (same trace
 * as the agent's); without it the agent's valid one passes, or a new one is made.
 */
export function upstreamRequestHeaders(
  incoming: IncomingHttpHeaders,
  context: ForwardContext,
  credential: Record<string, string>,
  traceparent?: string,
): Record<string, string | string[]> {
  const extra = connectionTokens(incoming);
  const out: Record<string, string | string[]> = {};
  for (const name in incoming) {
    if (REQUEST_DROP.has(name) || extra?.has(name)) continue;
    const value = incoming[name];
    if (value !== undefined) out[name] = value;
  }
  // The agent's own X-Forwarded-For chain was folded into clientIp by the trusted-proxy walk.
  out['x-forwarded-for'] = context.clientIp;
  out['x-forwarded-proto'] = context.proto;
  if (context.host) out['x-forwarded-host'] = context.host;
  if (traceparent !== undefined) {
    // Our span's trace is the agent's when it sent a valid one; its tracestate belongs with it.
    if (out.traceparent !== undefined && (typeof out.traceparent !== 'string' || out.traceparent.slice(3, 35) !== traceparent.slice(3, 35))) delete out.tracestate;
    out.traceparent = traceparent;
  } else if (typeof out.traceparent !== 'string' || !TRACEPARENT.test(out.traceparent)) {
    out.traceparent = newTraceparent();
    delete out.tracestate;
  }
  Object.assign(out, credential);
  return out;
}

/** Where an upstream lives and where the gateway serves it, for rewriting the upstream's `Location`. */
export interface UpstreamPlace {
  /** The upstream's configured URL. */
  url: URL;
  /** The gateway path that serves it (`/{basePath}/{name}/mcp`). */
  gatewayPath: string;
}

/**
 * An upstream's `Location` (or `Content-Location`) as the agent may see it: a URL on the upstream's
 * own origin, at or under its path, becomes the same place under the gateway path (query kept,
 * fragment dropped); anything else is undefined. Followed as is, a foreign Location would send the
 * agent, with the Authorization header many clients repeat on redirects, to a host we do not vouch
 * for; a Location to the upstream itself would make the agent bypass us.
 */
export function relocate(value: string, place: UpstreamPlace): string | undefined {
  let target: URL;
  try {
    target = new URL(value, place.url);
  } catch {
    return undefined;
  }
  if (target.origin !== place.url.origin) return undefined;
  const base = place.url.pathname.replace(/\/+$/, '');
  const path = target.pathname;
  if (path !== base && !path.startsWith(`${base}/`)) return undefined;
  return place.gatewayPath + path.slice(base.length) + target.search;
}

/**
 * The headers sent back to the agent: the upstream's minus hop-by-hop, cookies and challenges;
 * `Location`/`Content-Location` mapped to our path or dropped ({@link relocate}); SSE marked unbufferable.
 */
export function agentResponseHeaders(upstream: IncomingHttpHeaders, place?: UpstreamPlace): OutgoingHttpHeaders {
  const extra = connectionTokens(upstream);
  const out: OutgoingHttpHeaders = {};
  for (const name in upstream) {
    if (RESPONSE_DROP.has(name) || extra?.has(name)) continue;
    out[name] = upstream[name];
  }
  for (const name of ['location', 'content-location'] as const) {
    const value = upstream[name];
    const mapped = typeof value === 'string' && place ? relocate(value, place) : undefined;
    if (mapped !== undefined && !extra?.has(name)) out[name] = mapped;
  }
  if (isEventStream(upstream)) out['x-accel-buffering'] = 'no';
  return out;
}

/** True when the response is an SSE stream. */
export function isEventStream(headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type'];
  return typeof type === 'string' && type.toLowerCase().startsWith('text/event-stream');
}
