/**
 * The steps of one request on `/{name}/mcp`, in the order mcp-route.ts runs them: find the
 * upstream and check the origin, authenticate, read and inspect the body, check the MCP session's
 * owner and note its protocol version, resolve the upstream credential, forward. Each takes the
 * route ({@link McpRoute}) and the request's state ({@link McpExchange}); what happens to an
 * upstream's held 401/403 is rejection.ts, the audit's view of the answer observe.ts.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { sessionTag } from '../observability/logger.ts';
import { SpanKind } from '../observability/tracing.ts';
import { discardBody, readBody } from '../http/body.ts';
import { BadGateway, Forbidden, GatewayTimeout, NotFound, PayloadTooLarge } from '../http/errors.ts';
import type { RequestContext } from '../http/router.ts';
import type { Principal } from '../credentials/types.ts';
import { forward, UpstreamError, type ForwardOutcome } from './forward.ts';
import { upstreamRequestHeaders } from './headers.ts';
import { inspectRpc } from './jsonrpc.ts';
import { headerValue, logText, type McpExchange, type McpRoute, type ServedUpstream } from './mcp-exchange.ts';
import { observerFor } from './observe.ts';
import { answerAuthRequired, isAuthRejection } from './rejection.ts';
import type { Upstream } from './upstream.ts';

const CORS_EXPOSE_HEADERS = 'mcp-session-id, mcp-protocol-version, www-authenticate';
/**
 * The most body a refused (unauthenticated) request gets read: a declared length up to this is
 * read so the 401 can carry the request's JSON-RPC id; a larger or chunked body stays unread and
 * the connection is closed after the 401, so nobody makes us hold (or even receive) megabytes for
 * a request we never serve.
 */
const REFUSED_BODY_READ_BYTES = 16 * 1024;
/**
 * How much of a body over `maxBodyBytes` an authenticated (or open-access) request gets read and
 * thrown away before its 413, so that an agent that sends its whole body before reading (Node's
 * fetch) reads the 413 instead of failing with EPIPE: up to 16 MiB past the limit, for 5 s. An
 * unauthenticated request never gets this: its 401 may close the connection at once.
 */
const OVERSIZE_DISCARD = { extraBytes: 16 * 1024 * 1024, timeoutMs: 5_000 };

/** The upstream named in the path; 404 for a name we do not serve. */
export function upstreamFor(route: McpRoute, ctx: RequestContext): ServedUpstream {
  const served = route.byName.get(ctx.params.upstream!);
  if (!served) throw new NotFound(`no upstream named "${ctx.params.upstream}"`);
  ctx.log.upstream = served.upstream.name;
  return served;
}

/** DNS-rebinding and cross-site protection (MCP transport spec): a present Origin must be allowed. */
export function checkOrigin(route: McpRoute, ctx: RequestContext): void {
  const origin = ctx.req.headers.origin;
  if (origin === undefined) return;
  if (!route.allowedOrigins.has(origin)) throw new Forbidden(`origin ${JSON.stringify(origin.slice(0, 200))} is not allowed`);
  ctx.res.setHeader('access-control-allow-origin', origin);
  ctx.res.setHeader('access-control-expose-headers', CORS_EXPOSE_HEADERS);
  ctx.res.setHeader('vary', 'Origin');
}

/** The request's state as it enters the pipeline: its upstream found and its origin checked. */
export function beginExchange(route: McpRoute, ctx: RequestContext): McpExchange {
  const served = upstreamFor(route, ctx);
  checkOrigin(route, ctx);
  return new Exchange(ctx, served);
}

/**
 * {@link McpExchange} as a class: `signal` is the request's, read only by a step that passes it on
 * (a store read, a refresh), so a request without one never makes it (server.ts `signal`).
 */
class Exchange implements McpExchange {
  ctx: RequestContext;
  upstream: Upstream;
  served: ServedUpstream;
  method: string;
  body: Buffer | undefined = undefined;
  principal: Principal | undefined = undefined;
  rpc: McpExchange['rpc'] = undefined;
  mcpSessionId: string | undefined;
  protocolVersion: string | undefined;
  streamVersion: string | undefined;
  prefetched: Promise<unknown> | undefined = undefined;
  earlyOwner: Promise<void> | undefined = undefined;

  constructor(ctx: RequestContext, served: ServedUpstream) {
    this.ctx = ctx;
    this.upstream = served.upstream;
    this.served = served;
    this.method = ctx.req.method!;
    this.mcpSessionId = headerValue(ctx.req.headers, 'mcp-session-id');
    this.protocolVersion = this.streamVersion = headerValue(ctx.req.headers, 'mcp-protocol-version');
  }

  get signal(): AbortSignal {
    return this.ctx.signal;
  }
}

/**
 * The token is a header: it is checked before any byte of the body is read or parsed, so an
 * unauthenticated request costs no buffering (a burst of large unauthenticated POSTs used to be
 * held in memory whole, and parsed, before its 401). A refused request's body is read only
 * when it is small, for the JSON-RPC id of the refusal.
 */
export function authenticate(route: McpRoute, x: McpExchange): Promise<void> | undefined {
  const { ctx, upstream } = x;
  // Only a request with a read to start gets the callback (never one of an open gateway).
  const alongside = (route.sessionOwners && x.mcpSessionId) || upstream.credentials.prefetch ? (principal: Principal) => startReads(route, x, principal) : undefined;
  // Undefined: nobody to authenticate (a gateway without login), nothing to wait for.
  const verifying = route.tracer.enabled
    ? route.tracer.trace('authenticate', async () => route.authenticator.authenticate(ctx, upstream, alongside))
    : route.authenticator.authenticate(ctx, upstream, alongside);
  return verifying && settleAuthentication(route, x, verifying);
}

async function settleAuthentication(route: McpRoute, x: McpExchange, verifying: Promise<Principal | undefined>): Promise<void> {
  try {
    x.principal = await verifying;
  } catch (error) {
    if (x.method === 'POST') await readRefusedBody(route, x.ctx);
    throw error;
  }
  noteUser(route, x);
}

/**
 * The store reads a request needs once its principal is known (the MCP session's owner, the
 * session's upstream credential), started alongside the session's liveness check so that with
 * Valkey they share its round trip. Awaited later, in the order the checks had when each waited
 * for its own read, so the answer to a refused request is the same. A read nobody awaits (the
 * request was refused first) must not surface as an unhandled rejection.
 */
function startReads(route: McpRoute, x: McpExchange, principal: Principal): void {
  const { upstream, mcpSessionId, signal } = x;
  const owner = route.sessionOwners && mcpSessionId ? route.sessionOwners.check({ upstream: upstream.name, mcpSessionId, user: principal.subject }, signal) : undefined;
  const credential = upstream.credentials.prefetch?.({ principal, signal });
  owner?.catch(() => undefined);
  credential?.catch(() => undefined);
  x.earlyOwner = owner;
  x.prefetched = credential;
}

/** The JSON-RPC id of a refused request when its body is small; otherwise the body stays unread. */
async function readRefusedBody(route: McpRoute, ctx: RequestContext): Promise<void> {
  const declared = ctx.req.headers['content-length'];
  const chunked = ctx.req.headers['transfer-encoding'] !== undefined;
  if (declared === undefined && !chunked) return; // no body
  if (chunked || !(Number(declared) <= REFUSED_BODY_READ_BYTES)) {
    ctx.res.setHeader('connection', 'close');
    return;
  }
  let small: Buffer | undefined;
  try {
    small = await readBody(ctx.req, REFUSED_BODY_READ_BYTES, route.bodyBudget);
    ctx.rpcId = inspectRpc(small).id;
  } catch {
    // Not JSON-RPC, cut short, or no room: the refusal goes out without an id.
  } finally {
    if (small) route.bodyBudget?.release(small.length);
  }
}

/** The access log's `user` (log.user); never a token, never a session id. */
function noteUser(route: McpRoute, x: McpExchange): void {
  const { principal } = x;
  if (!principal || route.logUser === 'none') return;
  x.ctx.log.user = logText(route.logUser === 'sub' ? (principal.idpSubject ?? principal.subject) : principal.subject);
}

/**
 * Reads the POST body. Booked in the in-flight budget while it is read, released once the request
 * is answered (a replay after an upstream 401 needs it until then).
 */
export async function readRequestBody(route: McpRoute, x: McpExchange): Promise<void> {
  try {
    x.body = await readBody(x.ctx.req, route.maxBodyBytes, route.bodyBudget);
  } catch (error) {
    if (error instanceof PayloadTooLarge) {
      await discardBody(x.ctx.req, { maxBytes: route.maxBodyBytes + OVERSIZE_DISCARD.extraBytes, timeoutMs: OVERSIZE_DISCARD.timeoutMs });
    }
    throw error;
  }
}

/** What the body says (id, method, tool), for errors, the access log and the tool-call metric. */
export function inspectBody(x: McpExchange): void {
  const { ctx } = x;
  const rpc = inspectRpc(x.body!);
  x.rpc = rpc;
  ctx.rpcId = rpc.id;
  // Cut: the method is the client's text (a 500 KB method was a 500 KB log line).
  if (rpc.method) ctx.log.rpc = logText(rpc.method);
  if (rpc.toolName !== undefined) ctx.log.tool = logText(rpc.toolName);
}

/** Which sessions the access-log line is about, as tags (never the ids). */
export function noteSessions(x: McpExchange): void {
  if (x.mcpSessionId) x.ctx.log.session = sessionTag(x.mcpSessionId);
  if (x.principal) x.ctx.log.sid = sessionTag(x.principal.sessionId);
}

/**
 * The MCP session's checks, in this order: its owner (another user's session id is an unknown
 * session here, 404, before anything uses it), its protocol version noted, and for a GET stream
 * without the header the version the session noted. Undefined when there is nothing to wait for
 * (an await of nothing still costs a turn of the microtask queue).
 */
export function checkSession(route: McpRoute, x: McpExchange): Promise<void> | undefined {
  const owners = x.principal ? route.sessionOwners : undefined;
  const owner = owners && x.mcpSessionId ? (x.earlyOwner ?? owners.check({ upstream: x.upstream.name, mcpSessionId: x.mcpSessionId, user: x.principal!.subject }, x.signal)) : undefined;
  // A GET stream of a session can carry our notifications/elicitation/complete, in the session's version.
  const readVersion = x.method === 'GET' && Boolean(x.mcpSessionId) && route.streams !== undefined && !x.protocolVersion;
  if (!owner && !readVersion) return noteProtocolVersion(route, x);
  return checkSessionInOrder(route, x, owner, readVersion);
}

async function checkSessionInOrder(route: McpRoute, x: McpExchange, owner: Promise<void> | undefined, readVersion: boolean): Promise<void> {
  await owner;
  await noteProtocolVersion(route, x);
  if (readVersion) x.streamVersion = (await route.clientCapabilities?.get({ upstream: x.upstream.name, mcpSessionId: x.mcpSessionId }, x.signal))?.protocolVersion;
}

/**
 * Awaited: the record is shared by every replica and a store failure is a 503 like any other
 * (the cache makes this free for a session this replica has seen in the last touch interval).
 */
function noteProtocolVersion(route: McpRoute, x: McpExchange): Promise<void> | undefined {
  const { protocolVersion } = x;
  if (!protocolVersion) return undefined;
  return route.clientCapabilities?.noteProtocolVersion({ upstream: x.upstream.name, mcpSessionId: x.mcpSessionId, sessionId: x.principal?.sessionId, protocolVersion }, x.signal);
}

/**
 * The upstream credential's headers; undefined when the source asked the user to authorize
 * (the agent has been answered auth_required). The headers themselves, not a promise, when the
 * source answered synchronously (modes `none` and `static`).
 */
export function resolveCredential(route: McpRoute, x: McpExchange): Promise<Record<string, string> | undefined> | Record<string, string> {
  const { upstream } = x;
  const tracer = route.tracer;
  if (!tracer.enabled) {
    let headers: Promise<Record<string, string>> | Record<string, string>;
    try {
      headers = upstream.credentials.headers(x);
    } catch (error) {
      x.prefetched = undefined;
      return answerCredentialFailure(route, x, error);
    }
    if (!(headers instanceof Promise)) {
      x.prefetched = undefined;
      return headers;
    }
    return settleCredential(route, x, headers);
  }
  return settleCredential(route, x, tracer.trace('credentials', async (span) => (span.set('mcpgate.upstream', upstream.name), upstream.credentials.headers(x))));
}

async function answerCredentialFailure(route: McpRoute, x: McpExchange, error: unknown): Promise<undefined> {
  await answerAuthRequired(route, x, error);
  return undefined;
}

async function settleCredential(route: McpRoute, x: McpExchange, resolving: Promise<Record<string, string>>): Promise<Record<string, string> | undefined> {
  try {
    return await resolving;
  } catch (error) {
    await answerAuthRequired(route, x, error);
    return undefined;
  } finally {
    // A retry after an upstream 401 reads the credential afresh.
    x.prefetched = undefined;
  }
}

/**
 * Sends the request upstream with `credential` and streams the answer to the agent. Undefined
 * when the agent left first (nobody to answer); a failure before the upstream's head is the
 * HttpError it maps to (502, 504).
 */
export async function forwardUpstream(route: McpRoute, x: McpExchange, credential: Record<string, string>): Promise<ForwardOutcome | undefined> {
  const { ctx, upstream, served, method } = x;
  const tracer = route.tracer;
  // ctx.url is parsed on first use: only a target with a query needs it.
  const search = ctx.req.url?.includes('?') ? ctx.url.search : '';
  const path = search === '' ? served.path : served.path + (served.hasQuery ? search.replace(/^\?/, '&') : search);
  // A GET stream of a session can carry our notifications/elicitation/complete.
  const streams = method === 'GET' && x.mcpSessionId ? route.streams : undefined;
  let unregisterStream: (() => void) | undefined;
  let outcome: ForwardOutcome | undefined;
  // A child of the request's span (not made current: nothing below forward() starts spans).
  const upstreamSpan = tracer.enabled ? tracer.start('upstream', { kind: SpanKind.CLIENT, attributes: { 'mcpgate.upstream': upstream.name, 'http.request.method': method } }) : undefined;
  try {
    outcome = await forward({
      dispatcher: upstream.dispatcher,
      origin: served.origin,
      path,
      method,
      headers: upstreamRequestHeaders(ctx.req.headers, { clientIp: ctx.clientIp, proto: ctx.forwardedProto, host: ctx.forwardedHost }, credential, upstreamSpan?.traceparent()),
      body: x.body,
      res: ctx.res,
      headersTimeoutMs: route.upstreamTimeoutMs,
      place: served.place,
      sseKeepAliveMs: route.sseKeepAliveMs,
      hold: isAuthRejection,
      // Before the response ends: the access-log line is written on 'close'.
      onCut: () => void (ctx.log.cut = true),
      beforeResponse: recorderOfInitialize(route, x),
      endStream: route.drain && (method === 'GET' ? route.drain : route.requestsEnd),
      observe: observerFor(route, x),
      onStream: served.onStream,
      onSse: streams
        ? (injector) => {
            unregisterStream = streams.register({
              upstream: upstream.name,
              mcpSessionId: x.mcpSessionId!,
              sessionId: x.principal?.sessionId,
              protocolVersion: x.streamVersion,
              sink: { deliver: (event) => injector.inject(event) },
            });
          }
        : undefined,
    });
  } catch (error) {
    upstreamSpan?.fail(error instanceof UpstreamError ? error.kind : 'error');
    if (ctx.signal.aborted) {
      ctx.log.outcome = 'cancelled';
      return undefined; // the agent left: nobody to answer
    }
    throw upstreamFailure(route, error, upstream);
  } finally {
    unregisterStream?.();
    if (upstreamSpan) {
      if (outcome) upstreamSpan.set('http.response.status_code', outcome.kind === 'sent' ? outcome.status : outcome.rejection.status);
      upstreamSpan.end();
    }
  }
  return outcome;
}

/**
 * What initialize declared (its capabilities) and, with login, whose session it opens are stored
 * before the agent sees the answer: its next request may reach another replica, and must find them.
 */
function recorderOfInitialize(route: McpRoute, x: McpExchange): ((status: number, headers: IncomingHttpHeaders) => Promise<void> | undefined) | undefined {
  const capabilities = route.clientCapabilities;
  const owners = x.principal ? route.sessionOwners : undefined;
  const { rpc, upstream, principal, signal } = x;
  if (rpc?.method !== 'initialize' || !(capabilities || owners)) return undefined;
  return (status, headers) => {
    if (status >= 300) return undefined;
    const issued = headerValue(headers, 'mcp-session-id');
    const writes: Array<Promise<unknown>> = [];
    if (capabilities) {
      writes.push(capabilities.recordInitialize({ upstream: upstream.name, mcpSessionId: issued, sessionId: principal?.sessionId, capabilities: rpc.capabilities }, signal));
    }
    if (owners && issued) writes.push(owners.record({ upstream: upstream.name, mcpSessionId: issued, owner: principal!.subject }, signal));
    return writes.length > 0 ? Promise.all(writes).then(() => undefined) : undefined;
  };
}

function upstreamFailure(route: McpRoute, error: unknown, upstream: Upstream): Error {
  if (!(error instanceof UpstreamError)) return error as Error;
  route.metrics.upstreamErrors.inc({ upstream: upstream.name, kind: error.kind });
  if (error.kind === 'redirect') {
    return new BadGateway(`upstream "${upstream.name}" answered with a redirect to somewhere this gateway does not serve`, { cause: error });
  }
  if (error.kind === 'timeout') {
    return new GatewayTimeout(`upstream "${upstream.name}" did not answer within ${route.upstreamTimeoutMs / 1000} s`, { cause: error });
  }
  return new BadGateway(`upstream "${upstream.name}" is unreachable`, { cause: error });
}

/**
 * After a sent answer: the cut metric, an initialize's session announced, a DELETE's session
 * forgotten (the only wait, so undefined for any other request).
 */
export function afterSent(route: McpRoute, x: McpExchange, outcome: Extract<ForwardOutcome, { kind: 'sent' }>): Promise<void> | undefined {
  const { ctx, upstream, rpc, mcpSessionId } = x;
  if (outcome.cut) route.metrics.upstreamErrors.inc({ upstream: upstream.name, kind: 'cut' });
  if (rpc?.method === 'initialize' && outcome.status < 300) {
    const sessionId = headerValue(ctx.res.getHeaders() as IncomingHttpHeaders, 'mcp-session-id');
    if (sessionId) route.onInitialize?.({ upstream, rpc, mcpSessionId: sessionId });
  }
  const owners = x.principal ? route.sessionOwners : undefined;
  if (owners && mcpSessionId && x.method === 'DELETE' && outcome.status < 300) {
    // The agent ended its session: its id is never served again. A store failure here only leaves the record to expire.
    return owners.forget({ upstream: upstream.name, mcpSessionId }).catch(() => undefined);
  }
  return undefined;
}
