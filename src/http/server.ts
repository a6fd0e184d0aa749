import { createServer, ServerResponse, STATUS_CODES, type IncomingMessage, type OutgoingHttpHeader, type OutgoingHttpHeaders, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { REDACT_PATHS, type Logger } from '../observability/logger.ts';
import type { BoundCounter, BoundHistogram, GatewayMetrics } from '../observability/metrics.ts';
import { NOOP_TRACER, SpanKind, type Span, type Tracer } from '../observability/tracing.ts';
import { createClientAddressResolver } from './client-address.ts';
import { HttpError, MethodNotAllowed, NotFound } from './errors.ts';
import { createRouter, type RequestContext, type Route } from './router.ts';
import { sendError } from './send-error.ts';

/** Options of the front door. Durations in milliseconds. */
export interface FrontDoorOptions {
  routes: Route[];
  logger: Logger;
  metrics: GatewayMetrics;
  publicUrl: URL;
  trustedProxies: string[];
  /** Time allowed for a client to send request headers. Default 20 000. */
  headersTimeoutMs?: number;
  /** Time allowed to receive a whole request (headers and body); never limits a response stream. Default 60 000. */
  requestTimeoutMs?: number;
  /** How long an idle keep-alive connection stays open. Default 65 000 (above common ingress idle timeouts). */
  keepAliveTimeoutMs?: number;
  /** With tracing on, every request is a server span continuing the agent's `traceparent`. Default off. */
  tracer?: Tracer;
}

export interface FrontDoor {
  server: Server;
  /** Starts listening; resolves with the bound address. */
  listen(host: string, port: number): Promise<{ host: string; port: number }>;
  /**
   * Graceful stop: refuses new connections, closes idle ones, lets requests and streams in
   * flight finish, and cuts whatever is still open after `deadlineMs`.
   */
  shutdown(deadlineMs: number): Promise<void>;
  /** Requests currently being answered (streams included). */
  inFlight(): number;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Redact paths a flat log line (every value a primitive) can match: the wildcard ones
 * (`*.token`, `*.headers.authorization`) need a nested object. pino runs every field of a line
 * through the wildcard redactor (some 40 µs a line, a third of the gateway's CPU per request:
 * bench/README.md), so flat access lines use a child logger with only these.
 */
const TOP_LEVEL_REDACT_PATHS = REDACT_PATHS.filter((path) => !path.includes('.') && !path.includes('['));

/**
 * The response class of the front door: every response carries the request's `X-Request-Id`,
 * added to the headers `writeHead` is given rather than set ahead with `setHeader`. A header set
 * ahead sends `writeHead` down Node's slow path, which runs every header the handler passes
 * through `setHeader` again (validated, lower-cased, copied: about 1.5 KB of garbage and 1–2 µs a
 * proxied response, bench/README.md).
 */
class FrontDoorResponse extends ServerResponse {
  requestId = '';
  override writeHead(statusCode: number, reason?: string | OutgoingHttpHeaders | OutgoingHttpHeader[], headers?: OutgoingHttpHeaders | OutgoingHttpHeader[]): this {
    const given = typeof reason === 'string' ? headers : reason;
    if (this.requestId !== '' && !this.hasHeader('x-request-id')) {
      if (given === undefined || Array.isArray(given)) this.setHeader('x-request-id', this.requestId);
      else if (!('x-request-id' in given)) {
        const withId = { ...given, 'x-request-id': this.requestId };
        return typeof reason === 'string' ? super.writeHead(statusCode, reason, withId) : super.writeHead(statusCode, withId);
      }
    }
    return typeof reason === 'string' ? super.writeHead(statusCode, reason, headers) : super.writeHead(statusCode, reason);
  }
}

/** Creates the one `node:http` server with its route table, error mapper, request ids and access log. */
export function createFrontDoor(options: FrontDoorOptions): FrontDoor {
  const router = createRouter(options.routes);
  const addresses = createClientAddressResolver(options.trustedProxies);
  const { logger, metrics } = options;
  const tracer = options.tracer ?? NOOP_TRACER;
  // Same censor as createLogger, so a line reads the same whichever logger wrote it.
  const flatAccessLog = logger.child({}, { redact: { paths: TOP_LEVEL_REDACT_PATHS, censor: '[redacted]' } });
  let active = 0;
  let draining = false;
  /**
   * The request counter and latency series of each (route, method, status, upstream), bound once:
   * building and sorting a label key per request cost about 3 KB of garbage (bench/README.md).
   * Bounded by what can vary: the route table, the methods Node's parser accepts, status codes
   * and the configured upstream names; cleared if it ever grows past that.
   */
  const series = new Map<string, { requests: BoundCounter; latency: BoundHistogram }>();
  function seriesFor(route: string, method: string, status: number, upstream: string) {
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

  const server = createServer(
    {
      headersTimeout: options.headersTimeoutMs ?? 20_000,
      requestTimeout: options.requestTimeoutMs ?? 60_000,
      keepAliveTimeout: options.keepAliveTimeoutMs ?? 65_000,
      // No socket inactivity timeout: an idle SSE stream is legitimate.
      connectionsCheckingInterval: 5_000,
      ServerResponse: FrontDoorResponse as typeof ServerResponse,
    },
    (req, res) => {
      if (!tracer.enabled) return void handle(req, res, undefined);
      // The request span is current for everything the request does: its children find it through AsyncLocalStorage.
      const span = tracer.start(`${req.method ?? 'UNKNOWN'}`, { kind: SpanKind.SERVER, remoteParent: req.headers.traceparent });
      tracer.withSpan(span, () => void handle(req, res, span));
    },
  );
  server.timeout = 0;
  // Requests Node's parser refuses (a malformed request line or header, headers over 16 KB, a
  // client still sending headers at headersTimeout) never reach a route: Node would answer them
  // with a bare status line. Same status, plus the RFC 6749 error body every other refusal has.
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? 413 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    // As Node does: answer only if no response on this connection has started (else the bytes would interleave).
    const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (socket.writable && !inFlight?.headersSent) {
      const description = status === 431 ? 'request headers too large' : status === 408 ? 'request headers not received in time' : 'malformed HTTP request';
      writeRawRefusal(socket, status, 'invalid_request', description);
    }
    socket.destroy();
  });
  // An Expect other than 100-continue (RFC 9110 §10.1.1): Node's default 417 has an empty body.
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    sendError(res, new HttpError(417, 'expectation_failed', { description: 'only Expect: 100-continue is supported', headers: { connection: 'close' } }), 'oauth');
  });
  // CONNECT (a tunnel request) bypasses the request handler; without this Node drops the socket silently.
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
    writeRawRefusal(socket, 405, 'method_not_allowed', 'method CONNECT is not allowed here');
    socket.destroy();
  });

  async function handle(req: IncomingMessage, res: ServerResponse, span: Span | undefined): Promise<void> {
    const started = process.hrtime.bigint();
    active++;
    const incomingId = req.headers['x-request-id'];
    const requestId = typeof incomingId === 'string' && REQUEST_ID.test(incomingId) ? incomingId : randomUUID();
    (res as FrontDoorResponse).requestId = requestId;
    if (draining) res.setHeader('connection', 'close');

    const abort = new AbortController();
    const client = addresses.resolve(req);
    const target = req.url ?? '/';
    // The URL is parsed on first use only: routing and the gateway path need just the path,
    // which a plain target gives without a parser (about 2 µs a request saved).
    let url: URL | undefined;
    let pathname = plainPath(target);
    if (pathname === undefined) {
      url = parseTarget(target, options.publicUrl.origin);
      pathname = url.pathname;
    }
    const ctx: RequestContext = {
      req, res, params: {}, requestId,
      get url() {
        return (url ??= parseTarget(target, options.publicUrl.origin));
      },
      clientIp: client.ip, forwardedProto: client.proto, forwardedHost: client.host,
      signal: abort.signal, log: {}, errorStyle: 'oauth',
    };
    let routeName = 'unmatched';

    res.once('close', () => {
      active--;
      // A keep-alive connection whose stream just ended is idle now: while draining, let it go at once.
      if (draining) setImmediate(() => server.closeIdleConnections());
      if (!res.writableFinished) abort.abort(new Error('client closed the connection'));
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const status = res.headersSent ? res.statusCode : 499;
      const bound = seriesFor(routeName, req.method ?? 'UNKNOWN', status, String(ctx.log.upstream ?? ''));
      bound.requests.inc();
      bound.latency.observe(seconds);
      if (span) endRequestSpan(span, req.method ?? 'UNKNOWN', routeName, pathname, status, ctx.log);
      if (!logger.isLevelEnabled('info')) return;
      if (flatAccessLog.level !== logger.level) flatAccessLog.level = logger.level;
      (isFlat(ctx.log) ? flatAccessLog : logger).info({
        msg: 'request',
        reqId: requestId,
        method: req.method,
        path: pathname, // never the query: it can hold codes and state
        route: routeName,
        status,
        ms: Math.round(seconds * 1e6) / 1e3,
        ip: ctx.clientIp,
        completed: res.writableFinished,
        ...ctx.log,
      });
    });

    try {
      const match = router.match(req.method ?? 'GET', pathname);
      if (match.kind === 'not_found') throw new NotFound(`no route for ${pathname}`);
      if (match.kind === 'method_not_allowed') {
        // PUT /{name}/mcp is refused as a JSON-RPC error, like every other refusal on the MCP path.
        ctx.errorStyle = match.errorStyle ?? 'oauth';
        throw new MethodNotAllowed(`method ${req.method} is not allowed here`, { headers: { allow: match.allow.join(', ') } });
      }
      routeName = match.route.name ?? match.route.path;
      ctx.params = match.params;
      ctx.errorStyle = match.route.errorStyle ?? 'oauth';
      await match.route.handler(ctx);
    } catch (error) {
      const sent = sendError(res, error, ctx.errorStyle, ctx.rpcId);
      // Not under `err`: pino's error serializer would fold the causes into one message and drop them.
      if (sent.status >= 500) logger.error({ msg: 'request failed', reqId: requestId, failure: describeCause(error) });
      else ctx.log.error = sent.code;
      if (res.headersSent && !res.writableEnded) res.destroy();
    }
  }

  return {
    server,
    listen: (host, port) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const address = server.address();
          if (address && typeof address === 'object') resolve({ host: address.address, port: address.port });
          else reject(new Error('server did not bind a TCP address'));
        });
      }),
    inFlight: () => active,
    shutdown(deadlineMs) {
      draining = true;
      return new Promise((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), deadlineMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      });
    },
  };
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

/** Writes a whole `connection: close` response with an RFC 6749 error body on a socket no ServerResponse owns. */
function writeRawRefusal(socket: Duplex, status: number, code: string, description: string): void {
  const body = JSON.stringify({ error: code, error_description: description });
  socket.write(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `cache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** A request target parsed against our origin; one that cannot be parsed counts as `/`. */
function parseTarget(target: string, origin: string): URL {
  try {
    return new URL(target, origin);
  } catch {
    return new URL('/', origin);
  }
}

/** Path characters the WHATWG URL parser leaves as they are (no percent-encoding, no backslash). */
const PLAIN_PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/;
/** A `.` or `..` segment, which the parser would resolve. */
const DOT_SEGMENT = /\/\.\.?(?:\/|$)/;

/**
 * The path of an origin-form target (RFC 9112 §3.2.1) when `new URL(target, origin).pathname`
 * would return it unchanged; undefined otherwise (percent signs, dot segments, `//`, characters
 * the parser encodes), and the caller parses. test/http/request-target.test.ts holds the two equal.
 */
export function plainPath(target: string): string | undefined {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  if (path.charCodeAt(1) === 0x2f || !PLAIN_PATH.test(path) || DOT_SEGMENT.test(path)) return undefined;
  return path;
}

/** True when no value is an object, so only top-level redact paths can apply. */
function isFlat(fields: Record<string, unknown>): boolean {
  for (const key in fields) {
    const value = fields[key];
    if (typeof value === 'object' && value !== null) return false;
  }
  return true;
}

/**
 * What of an error may be logged: its name, message, code and cause chain (our errors never hold
 * secrets). Log it under a key of its own (`failure`), not `err`, whose pino serializer folds the
 * chain into one message. The code is `errorCode`: the logger redacts every `*.code` (an OAuth
 * authorization code), which would blank an error code such as `ECONNREFUSED` too.
 */
export function describeCause(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: String(error) };
  const out: Record<string, unknown> = { name: error.name, message: error.message };
  if ('code' in error && typeof error.code === 'string') out.errorCode = error.code;
  if (error.cause !== undefined) out.cause = describeCause(error.cause);
  return out;
}
