/**
 * The end of a request: its request counter and latency series, its span, and its access-log
 * line, all written when the response closes (finished, failed or cut by the client).
 */
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
  const series = new Map<string, Series>();
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
      if (flatAccessLog.level !== logger.level) flatAccessLog.level = logger.level;
      (isFlat(ctx.log) ? flatAccessLog : logger).info({
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
      });
    },
  };
}

/**
 * The bound series of one (route, method, status, upstream), created on first use. Bounded by
 * what can vary: the route table, the methods Node's parser accepts, status codes and the
 * configured upstream names; cleared if it ever grows past that.
 */
function seriesFor(series: Map<string, Series>, metrics: GatewayMetrics, route: string, method: string, status: number, upstream: string): Series {
  const key = `${route}\n${method}\n${status}\n${upstream}`;
  let bound = series.get(key);
  if (!bound) {
    if (series.size >= 10_000) series.clear();
    bound = {
      requests: metrics.requests.labels({ route, method, status: String(status), upstream }),
      latency: metrics.latency.labels({ route, upstream }),
    };
    series.set(key, bound);
  }
  return bound;
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

/** True when no value is an object, so only top-level redact paths can apply. */
function isFlat(fields: Record<string, unknown>): boolean {
  for (const key in fields) {
    const value = fields[key];
    if (typeof value === 'object' && value !== null) return false;
  }
  return true;
}
