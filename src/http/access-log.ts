/**
 * The end of a request: its request counter and latency series, its span, and its access-log
 * line, all written when the response closes (finished, failed or cut by the client).
 */
import { pino } from 'pino';
import { REDACT_PATHS, type Logger } from '../observability/logger.ts';
import type { BoundCounter, BoundHistogram, GatewayMetrics } from '../observability/metrics.ts';
import type { Span } from '../observability/tracing.ts';
import type { RequestContext } from './router.ts';

/**
 * Redact paths a flat log line (every value a primitive) can match: the wildcard ones
 * (`*.token`, `*.headers.authorization`) need a nested object. pino runs every field of a line
 * through the wildcard redactor (some 40 µs a line, a third of the gateway's CPU per request:
 * bench/README.md), so flat access lines use a child logger with only these.
 */
const TOP_LEVEL_REDACT_PATHS = REDACT_PATHS.filter((path) => !path.includes('.') && !path.includes('['));

/** What the access log needs of a request that has ended. */
export interface EndedRequest {
  ctx: RequestContext;
  /** `process.hrtime.bigint()` when the request arrived. */
  started: bigint;
  /** The matched route's name, or `unmatched`. */
  routeName: string;
  /** The path routed on (never the query: it can hold codes and state). */
  pathname: string;
  /** The request's server span, when tracing is on. */
  span: Span | undefined;
}

/** Records each ended request in the metrics, its span and the access log. */
export interface AccessLog {
  record(request: EndedRequest): void;
}

/** The series of one (route, method, status, upstream). */
interface Series {
  requests: BoundCounter;
  latency: BoundHistogram;
}

/** Creates the access log over `logger` (lines at `info`) and the request metrics. */
export function createAccessLog(options: { logger: Logger; metrics: GatewayMetrics }): AccessLog {
  const { logger, metrics } = options;
  // Same censor as createLogger, so a line reads the same whichever logger wrote it.
  const flatAccessLog = logger.child({}, { redact: { paths: TOP_LEVEL_REDACT_PATHS, censor: '[redacted]' } });
  /**
   * The request counter and latency series of each (route, method, status, upstream), bound once:
   * building and sorting a label key per request cost about 3 KB of garbage (bench/README.md).
   */
  const series: SeriesTable = { byRoute: new Map(), size: 0 };
  const direct = directWriter(flatAccessLog, logger.levels.values.info!);
  const leftToPino = keysLeftToPino(flatAccessLog);
  return {
    record({ ctx, started, routeName, pathname, span }) {
      const { req, res } = ctx;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const status = res.headersSent ? res.statusCode : 499;
      const bound = seriesFor(series, metrics, routeName, req.method ?? 'UNKNOWN', status, String(ctx.log.upstream ?? ''));
      bound.requests.inc();
      bound.latency.observe(seconds);
      if (span) endRequestSpan(span, req.method ?? 'UNKNOWN', routeName, pathname, status, ctx.log);
      if (!logger.isLevelEnabled('info')) return;
      const fields = {
        msg: 'request',
        reqId: ctx.requestId,
        method: req.method,
        path: pathname, // never the query: it can hold codes and state
        route: routeName,
        status,
        ms: Math.round(seconds * 1e6) / 1e3,
        ip: ctx.clientIp,
        completed: res.writableFinished,
        ...ctx.log,
      };
      const shape = shapeOf(ctx.log, leftToPino);
      if (shape === 'direct' && direct) return direct(fields);
      if (flatAccessLog.level !== logger.level) flatAccessLog.level = logger.level;
      (shape === 'nested' ? logger : flatAccessLog).info(fields);
    },
  };
}

/** The bound series by route, method, status and upstream, and how many there are. */
interface SeriesTable {
  byRoute: Map<string, Map<string, Map<number, Map<string, Series>>>>;
  size: number;
}

/**
 * The bound series of one (route, method, status, upstream), created on first use, found by one
 * map per label: a key string joined per request cost 0.2 µs and its garbage (bench/README.md).
 * Bounded by what can vary: the route table, the methods Node's parser accepts, status codes
 * and the configured upstream names; cleared if it ever grows past that.
 */
function seriesFor(table: SeriesTable, metrics: GatewayMetrics, route: string, method: string, status: number, upstream: string): Series {
  const byUpstream = child(child(child(table.byRoute, route), method), status);
  let bound = byUpstream.get(upstream);
  if (!bound) {
    if (table.size >= 10_000) {
      table.byRoute.clear();
      table.size = 0;
      return seriesFor(table, metrics, route, method, status, upstream);
    }
    bound = {
      requests: metrics.requests.labels({ route, method, status: String(status), upstream }),
      latency: metrics.latency.labels({ route, upstream }),
    };
    byUpstream.set(upstream, bound);
    table.size++;
  }
  return bound;
}

/** The map under `key`, created when missing. */
function child<K, InnerKey, Inner>(map: Map<K, Map<InnerKey, Inner>>, key: K): Map<InnerKey, Inner> {
  let next = map.get(key);
  if (!next) map.set(key, (next = new Map()));
  return next;
}

/**
 * Names and ends a request's span. Attributes are what an operator searches by (method, route,
 * status, upstream, MCP method, tool); never a token, a session id or the query.
 */
function endRequestSpan(span: Span, method: string, route: string, path: string, status: number, log: Record<string, unknown>): void {
  span.name = `${method} ${route}`;
  span.set('http.request.method', method);
  span.set('http.route', route);
  span.set('url.path', path);
  span.set('http.response.status_code', status);
  for (const [key, attribute] of [['upstream', 'mcpgate.upstream'], ['rpc', 'mcp.method.name'], ['tool', 'gen_ai.tool.name'], ['outcome', 'mcpgate.outcome'], ['error', 'error.type']] as const) {
    const value = log[key];
    if (typeof value === 'string') span.set(attribute, value);
  }
  if (status >= 500) span.fail(`status ${status}`);
  span.end();
}

/** pino's symbols for the state it keeps on a logger (`pino.symbols`, public for integrations). */
const P = pino.symbols;

/**
 * Writes a flat access line as pino would (the line shown by test/http/access-log.test.ts to be
 * pino's own, byte for byte but a lone surrogate, which this escapes as JSON does and pino
 * writes raw): pino's level prefix, time, bindings and line end around `JSON.stringify` of the
 * fields, on pino's stream. pino's serializer walked the line key by key, in about 4 µs and
 * 3 KB of garbage a request against 2 µs (bench/README.md). Undefined when the logger has
 * anything this does not reproduce (a log formatter, a mixin, a nested key, hooks, a stream
 * that wants each line's metadata, wildcard redaction): then every line goes through pino.
 */
function directWriter(logger: Logger, level: number): ((fields: Record<string, unknown>) => void) | undefined {
  const state = logger as unknown as Record<symbol, Record<PropertyKey, unknown>>;
  const stream = state[P.streamSym] as unknown as { write(line: string): void } & Record<symbol, unknown>;
  const hooks = state[P.hooksSym]!;
  const simple =
    state[P.formattersSym]!.log === undefined && state[P.mixinSym] === undefined && !state[P.nestedKeySym] &&
    hooks.logMethod === undefined && hooks.streamWrite === undefined && stream[P.needsMetadataGsym] !== true &&
    state[P.stringifiersSym]![P.wildcardFirstSym] === undefined && typeof state[P.lsCacheSym]![level] === 'string';
  if (!simple) return undefined;
  const head = state[P.lsCacheSym]![level] as string;
  const time = (state[P.timeSym] as unknown as () => string).bind(logger);
  const bindings = state[P.chindingsSym] as unknown as string;
  const end = state[P.endSym] as unknown as string;
  return (fields) => {
    const json = JSON.stringify(fields);
    stream.write(`${head}${time()}${bindings},${json.slice(1, -1)}${end}`);
  };
}

/**
 * Keys whose value pino would not write as JSON has it: those a top-level redact path names, or
 * a serializer claims, and `headers` and `socket`, which with `method` make pino read a line as
 * an HTTP request.
 */
function keysLeftToPino(logger: Logger): Set<string> {
  const state = logger as unknown as Record<symbol, Record<string, unknown>>;
  const keys = new Set([...Object.keys(state[P.stringifiersSym]!), ...Object.keys(state[P.serializersSym]!), 'headers', 'socket']);
  keys.add(String(state[P.errorKeySym]));
  return keys;
}

/**
 * How the fields a route added can be written: `direct` when every value is a string, a finite
 * or non-finite number, a boolean, null or undefined under a key pino treats as any other;
 * `flat` when no value is an object (only top-level redact paths can apply); `nested` else.
 */
function shapeOf(fields: Record<string, unknown>, leftToPino: Set<string>): 'direct' | 'flat' | 'nested' {
  let shape: 'direct' | 'flat' = 'direct';
  for (const key in fields) {
    const value = fields[key];
    const type = typeof value;
    if (type === 'object' && value !== null) return 'nested';
    if ((type !== 'string' && type !== 'number' && type !== 'boolean' && value != null) || leftToPino.has(key)) shape = 'flat';
  }
  return shape;
}
