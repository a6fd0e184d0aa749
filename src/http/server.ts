import { createServer, ServerResponse, STATUS_CODES, type IncomingMessage, type OutgoingHttpHeader, type OutgoingHttpHeaders, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Logger } from '../observability/logger.ts';
import type { GatewayMetrics } from '../observability/metrics.ts';
import { NOOP_TRACER, SpanKind, type Span, type Tracer } from '../observability/tracing.ts';
import { createAccessLog, type AccessLog, type EndedRequest } from './access-log.ts';
import { createClientAddressResolver, type ClientAddressResolver } from './client-address.ts';
import { HttpError, MethodNotAllowed, NotFound } from './errors.ts';
import { parseTarget, plainPath } from './request-target.ts';
import { createRouter, type RequestContext, type Route } from './router.ts';
import { sendError, type ErrorStyle } from './send-error.ts';

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

/** What every step of the request pipeline shares: built once by createFrontDoor. */
interface Door {
  server: Server;
  router: ReturnType<typeof createRouter>;
  addresses: ClientAddressResolver;
  /** The public URL's origin, which request targets are parsed against. */
  origin: string;
  logger: Logger;
  tracer: Tracer;
  accessLog: AccessLog;
  /** Requests being answered (streams included). */
  active: number;
  /** Set by shutdown: responses close their connection, idle ones are let go. */
  draining: boolean;
}

/** One request on its way through the front door. */
interface InFlight extends EndedRequest {
  ctx: FrontDoorContext;
}

/** Creates the one `node:http` server with its route table, error mapper, request ids and access log. */
export function createFrontDoor(options: FrontDoorOptions): FrontDoor {
  const door: Door = {
    server: createServer(
      {
        headersTimeout: options.headersTimeoutMs ?? 20_000,
        requestTimeout: options.requestTimeoutMs ?? 60_000,
        keepAliveTimeout: options.keepAliveTimeoutMs ?? 65_000,
        // No socket inactivity timeout: an idle SSE stream is legitimate.
        connectionsCheckingInterval: 5_000,
        ServerResponse: FrontDoorResponse as typeof ServerResponse,
      },
      (req, res) => accept(door, req, res),
    ),
    router: createRouter(options.routes),
    addresses: createClientAddressResolver(options.trustedProxies),
    origin: options.publicUrl.origin,
    logger: options.logger,
    tracer: options.tracer ?? NOOP_TRACER,
    accessLog: createAccessLog({ logger: options.logger, metrics: options.metrics }),
    active: 0,
    draining: false,
  };
  const { server } = door;
  server.timeout = 0;
  answerParserRefusals(server);
  return {
    server,
    listen: (host, port) => listen(server, host, port),
    inFlight: () => door.active,
    shutdown: (deadlineMs) => shutdown(door, deadlineMs),
  };
}

/**
 * Requests Node answers without calling the request handler, answered with the same status plus
 * the RFC 6749 error body every other refusal has.
 */
function answerParserRefusals(server: Server): void {
  // Requests Node's parser refuses (a malformed request line or header, headers over 16 KB, a
  // client still sending headers at headersTimeout) never reach a route: Node would answer them
  // with a bare status line.
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
}

/** The request listener: with tracing on, the request runs inside its server span. */
function accept(door: Door, req: IncomingMessage, res: ServerResponse): void {
  if (!door.tracer.enabled) return void handle(door, req, res, undefined);
  // The request span is current for everything the request does: its children find it through AsyncLocalStorage.
  const span = door.tracer.start(`${req.method ?? 'UNKNOWN'}`, { kind: SpanKind.SERVER, remoteParent: req.headers.traceparent });
  door.tracer.withSpan(span, () => void handle(door, req, res, span));
}

/** One request: started, routed, handled, its error mapped; recorded when the response closes. */
async function handle(door: Door, req: IncomingMessage, res: ServerResponse, span: Span | undefined): Promise<void> {
  const request = startRequest(door, req, res, span);
  res.once('close', () => endRequest(door, request));
  try {
    const route = routeRequest(door, request);
    await route.handler(request.ctx);
  } catch (error) {
    mapError(door, request.ctx, error);
  }
}

/** Counts the request in, and gives it its id, abort signal, client address and path. */
function startRequest(door: Door, req: IncomingMessage, res: ServerResponse, span: Span | undefined): InFlight {
  const started = process.hrtime.bigint();
  door.active++;
  const incomingId = req.headers['x-request-id'];
  const requestId = typeof incomingId === 'string' && REQUEST_ID.test(incomingId) ? incomingId : randomUUID();
  (res as FrontDoorResponse).requestId = requestId;
  if (door.draining) res.setHeader('connection', 'close');

  const client = door.addresses.resolve(req);
  const target = req.url ?? '/';
  // The URL is parsed on first use only: routing and the gateway path need just the path,
  // which a plain target gives without a parser (about 2 µs a request saved).
  let url: URL | undefined;
  let pathname = plainPath(target);
  if (pathname === undefined) {
    url = parseTarget(target, door.origin);
    pathname = url.pathname;
  }
  const ctx = new FrontDoorContext(req, res, requestId, client, target, door.origin, url);
  return { ctx, started, routeName: 'unmatched', pathname, span };
}

/**
 * The context of one request. A class because `url` and `signal` are getters (made on first
 * use), and an object literal with a getter is built by V8's slow path, in dictionary mode: 0.55
 * µs to create against 0.03 µs, and every later read of a field a hash lookup (bench/README.md).
 * The abort signal is made only for a request that passes it on (a store call, a refresh): an
 * `AbortController` with its listener was 1.4 % of a proxied request that never needed one.
 */
class FrontDoorContext implements RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  params: Readonly<Record<string, string>> = {};
  requestId: string;
  clientIp: string;
  forwardedProto: string;
  forwardedHost: string | undefined;
  log: Record<string, unknown> = {};
  errorStyle: ErrorStyle = 'oauth';
  rpcId?: string | number | null;
  #url: URL | undefined;
  #abort: AbortController | undefined;
  /** The response closed before it finished: the client went away. */
  #left = false;
  readonly #target: string;
  readonly #origin: string;

  constructor(req: IncomingMessage, res: ServerResponse, requestId: string, client: { ip: string; proto: string; host: string | undefined }, target: string, origin: string, url: URL | undefined) {
    this.req = req;
    this.res = res;
    this.requestId = requestId;
    this.clientIp = client.ip;
    this.forwardedProto = client.proto;
    this.forwardedHost = client.host;
    this.#target = target;
    this.#origin = origin;
    this.#url = url;
  }

  get url(): URL {
    return (this.#url ??= parseTarget(this.#target, this.#origin));
  }

  /** Aborted when the client goes away before its response finished (already aborted if it has). */
  get signal(): AbortSignal {
    if (this.#abort === undefined) {
      this.#abort = new AbortController();
      if (this.#left) this.#abort.abort(clientLeftError());
    }
    return this.#abort.signal;
  }

  /** The response closed before it finished: whoever holds the signal is told. */
  clientLeft(): void {
    this.#left = true;
    this.#abort?.abort(clientLeftError());
  }
}

/** The abort reason of a request whose client went away. */
function clientLeftError(): Error {
  return new Error('client closed the connection');
}

/** The route of the request, with its name, parameters and error style set; throws 404 or 405. */
function routeRequest(door: Door, request: InFlight): Route {
  const { ctx, pathname } = request;
  const method = ctx.req.method;
  const match = door.router.match(method ?? 'GET', pathname);
  if (match.kind === 'not_found') throw new NotFound(`no route for ${pathname}`);
  if (match.kind === 'method_not_allowed') {
    // PUT /{name}/mcp is refused as a JSON-RPC error, like every other refusal on the MCP path.
    ctx.errorStyle = match.errorStyle ?? 'oauth';
    throw new MethodNotAllowed(`method ${method} is not allowed here`, { headers: { allow: match.allow.join(', ') } });
  }
  request.routeName = match.route.name ?? match.route.path;
  ctx.params = match.params;
  ctx.errorStyle = match.route.errorStyle ?? 'oauth';
  return match.route;
}

/** Answers what the handler threw (or cuts a response already started); 5xx causes are logged. */
function mapError(door: Door, ctx: RequestContext, error: unknown): void {
  const { res } = ctx;
  const sent = sendError(res, error, ctx.errorStyle, ctx.rpcId);
  // Not under `err`: pino's error serializer would fold the causes into one message and drop them.
  if (sent.status >= 500) door.logger.error({ msg: 'request failed', reqId: ctx.requestId, failure: describeCause(error) });
  else ctx.log.error = sent.code;
  if (res.headersSent && !res.writableEnded) res.destroy();
}

/** The response closed: the request is counted out, aborted if unfinished, and recorded. */
function endRequest(door: Door, request: InFlight): void {
  door.active--;
  // A keep-alive connection whose stream just ended is idle now: while draining, let it go at once.
  if (door.draining) setImmediate(() => door.server.closeIdleConnections());
  if (!request.ctx.res.writableFinished) request.ctx.clientLeft();
  door.accessLog.record(request);
}

/** Starts listening; resolves with the bound address. */
function listen(server: Server, host: string, port: number): Promise<{ host: string; port: number }> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const address = server.address();
      if (address && typeof address === 'object') resolve({ host: address.address, port: address.port });
      else reject(new Error('server did not bind a TCP address'));
    });
  });
}

/** Refuses new connections, closes idle ones, and cuts what is still open after `deadlineMs`. */
function shutdown(door: Door, deadlineMs: number): Promise<void> {
  const { server } = door;
  door.draining = true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), deadlineMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/** Writes a whole `connection: close` response with an RFC 6749 error body on a socket no ServerResponse owns. */
function writeRawRefusal(socket: Duplex, status: number, code: string, description: string): void {
  const body = JSON.stringify({ error: code, error_description: description });
  socket.write(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `cache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
  );
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
