import type { IncomingHttpHeaders } from 'node:http';
import type { Logger } from '../observability/logger.ts';
import { sessionTag } from '../observability/logger.ts';
import type { GatewayMetrics } from '../observability/metrics.ts';
import { NOOP_TRACER, SpanKind, type Tracer } from '../observability/tracing.ts';
import { discardBody, readBody } from '../http/body.ts';
import type { BodyBudget } from '../http/body-budget.ts';
import { BadGateway, Forbidden, GatewayTimeout, NotFound, PayloadTooLarge } from '../http/errors.ts';
import type { RequestContext, Route } from '../http/router.ts';
import type { CredentialRequest, Principal } from '../credentials/types.ts';
import { AuthRequiredError } from '../upstream-oauth/auth-required.ts';
import type { Authenticator } from './authenticate.ts';
import type { AuthRequiredRenderer } from './challenge.ts';
import type { ClientCapabilities } from './client-capabilities.ts';
import type { SessionOwners } from './session-owner.ts';
import type { StreamRegistry } from './stream-registry.ts';
import { forward, UpstreamError } from './forward.ts';
import { upstreamRequestHeaders } from './headers.ts';
import { inspectRpc, type RpcInfo } from './jsonrpc.ts';
import { createRpcResponseTap, type ResponseObserver } from './response-tap.ts';
import type { ToolCatalog } from './tool-catalog.ts';
import type { Upstream } from './upstream.ts';

/** Dependencies of the MCP gateway path. */
export interface McpRouteOptions {
  upstreams: Upstream[];
  authenticator: Authenticator;
  logger: Logger;
  metrics: GatewayMetrics;
  /** Our own origin (from the public URL): always an acceptable `Origin`. */
  publicOrigin: string;
  allowedOrigins: string[];
  maxBodyBytes: number;
  /** Bytes of POST bodies buffered at once across all requests (`server.maxBodyBytesInFlight`); unbounded without it. */
  bodyBudget?: BodyBudget;
  upstreamTimeoutMs: number;
  sseKeepAliveMs?: number;
  /** Base path of the public URL ('' or '/prefix'). */
  basePath: string;
  /** Sees each initialize exchange that opened an MCP session. */
  onInitialize?(info: { upstream: Upstream; rpc: RpcInfo; mcpSessionId: string }): void;
  /** Answers an `AuthRequiredError` from a credential source by channel; without it, that error is a 500. */
  authRequired?: AuthRequiredRenderer;
  /** Per-session client facts for the auth_required channels: the route records each initialize and notes `MCP-Protocol-Version`. */
  clientCapabilities?: ClientCapabilities;
  /** Open GET streams per session, for `notifications/elicitation/complete`. */
  streams?: StreamRegistry;
  /**
   * Which user each MCP session was issued to (session-owner.ts); with login, a session id is
   * served only to its owner. Absent without login: there is no user to bind to.
   */
  sessionOwners?: SessionOwners;
  /**
   * Shutdown: when `signal` aborts, every GET stream ends at its next event boundary (the agent
   * resumes on another replica with `Last-Event-ID`); the SSE answer to a POST, a request in
   * flight, may run `requestGraceMs` longer before it is ended the same way.
   */
  drain?: { signal: AbortSignal; requestGraceMs: number };
  /**
   * Who the access-log line names (`log.user`): `sub` the IdP's `sub`, `claim` the user as the
   * gateway knows them (`idp.userClaim`), `none` nobody. Default `sub`.
   */
  logUser?: 'none' | 'sub' | 'claim';
  /** The tool names upstreams listed: the label set of the tool-call metric. Without it every tool is `other`. */
  toolCatalog?: ToolCatalog;
  /** With tracing on: spans `authenticate`, `credentials` and `upstream` under the request's. Default off. */
  tracer?: Tracer;
}

/**
 * What became of an MCP request, in its access-log line (`outcome`) and the tool-call metric:
 * `ok` the upstream answered below 400; `tool_error` a `tools/call` answered with a JSON-RPC
 * error or a result with `isError`; `upstream_error` the upstream answered 400 or more;
 * `auth_required` the user must authorize an upstream (the channel is in `authRequired`);
 * `denied` our access token was refused (401/403); `error` anything else (502, 504, 503…);
 * `cancelled` the agent left first.
 */
export type RequestOutcome = 'ok' | 'tool_error' | 'upstream_error' | 'auth_required' | 'denied' | 'error' | 'cancelled';

/** Most bytes of one `tools/list` answer read for tool names, and of a `tools/call` answer for its error flag. */
const TAP_BYTES = { list: 1024 * 1024, call: 256 * 1024 };

const CORS_ALLOW_HEADERS = 'authorization, content-type, accept, mcp-session-id, mcp-protocol-version, last-event-id, mcp-method, mcp-name';
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

/**
 * The routes of `/{name}/mcp`: check the origin, authenticate, read and inspect the body
 * (bounded per request and in total), resolve the upstream credential, forward streaming, and hand upstream 401/403s
 * to the credential source before any byte reaches the agent.
 */
export function createMcpRoutes(options: McpRouteOptions): Route[] {
  const byName = new Map(options.upstreams.map((u) => [u.name, u]));
  const allowedOrigins = new Set([options.publicOrigin, ...options.allowedOrigins]);
  const drain = options.drain;
  const tracer = options.tracer ?? NOOP_TRACER;
  /** Aborted `requestGraceMs` after the drain began: the end of the answers to requests in flight. */
  const requestsEnd = new AbortController();
  drain?.signal.addEventListener('abort', () => setTimeout(() => requestsEnd.abort(), drain.requestGraceMs).unref(), { once: true });

  function upstreamFor(ctx: RequestContext): Upstream {
    const upstream = byName.get(ctx.params.upstream!);
    if (!upstream) throw new NotFound(`no upstream named "${ctx.params.upstream}"`);
    ctx.log.upstream = upstream.name;
    return upstream;
  }

  /** DNS-rebinding and cross-site protection (MCP transport spec): a present Origin must be allowed. */
  function checkOrigin(ctx: RequestContext): void {
    const origin = ctx.req.headers.origin;
    if (origin === undefined) return;
    if (!allowedOrigins.has(origin)) throw new Forbidden(`origin ${JSON.stringify(origin.slice(0, 200))} is not allowed`);
    ctx.res.setHeader('access-control-allow-origin', origin);
    ctx.res.setHeader('access-control-expose-headers', CORS_EXPOSE_HEADERS);
    ctx.res.setHeader('vary', 'Origin');
  }

  async function preflight(ctx: RequestContext): Promise<void> {
    upstreamFor(ctx);
    checkOrigin(ctx);
    ctx.res.writeHead(204, {
      'access-control-allow-methods': 'GET, POST, DELETE',
      'access-control-allow-headers': CORS_ALLOW_HEADERS,
      'access-control-max-age': '600',
    });
    ctx.res.end();
  }

  /**
   * The token is a header: it is checked before any byte of the body is read or parsed, so an
   * unauthenticated request costs no buffering (a burst of large unauthenticated POSTs used to be
   * held in memory whole, and parsed, before its 401). A refused request's body is read only
   * when it is small, for the JSON-RPC id of the refusal.
   */
  async function authenticateFirst(ctx: RequestContext, upstream: Upstream, alongside?: (principal: Principal) => void): Promise<Principal | undefined> {
    try {
      return await (tracer.enabled
        ? tracer.trace('authenticate', () => options.authenticator.authenticate(ctx, upstream, alongside))
        : options.authenticator.authenticate(ctx, upstream, alongside));
    } catch (error) {
      if (ctx.req.method === 'POST') await readRefusedBody(ctx);
      throw error;
    }
  }

  /** The JSON-RPC id of a refused request when its body is small; otherwise the body stays unread. */
  async function readRefusedBody(ctx: RequestContext): Promise<void> {
    const declared = ctx.req.headers['content-length'];
    const chunked = ctx.req.headers['transfer-encoding'] !== undefined;
    if (declared === undefined && !chunked) return; // no body
    if (chunked || !(Number(declared) <= REFUSED_BODY_READ_BYTES)) {
      ctx.res.setHeader('connection', 'close');
      return;
    }
    let small: Buffer | undefined;
    try {
      small = await readBody(ctx.req, REFUSED_BODY_READ_BYTES, options.bodyBudget);
      ctx.rpcId = inspectRpc(small).id;
    } catch {
      // Not JSON-RPC, cut short, or no room: the refusal goes out without an id.
    } finally {
      if (small) options.bodyBudget?.release(small.length);
    }
  }

  /**
   * The store reads a request needs once its principal is known (the MCP session's owner, the
   * session's upstream credential), started alongside the session's liveness check so that with
   * Valkey they share its round trip. Awaited later, in the order the checks had when each waited
   * for its own read, so the answer to a refused request is the same. A read nobody awaits (the
   * request was refused first) must not surface as an unhandled rejection.
   */
  function startReads(ctx: RequestContext, upstream: Upstream, principal: Principal): EarlyReads {
    const mcpSessionId = headerValue(ctx.req.headers, 'mcp-session-id');
    const owner = options.sessionOwners && mcpSessionId ? options.sessionOwners.check({ upstream: upstream.name, mcpSessionId, user: principal.subject }, ctx.signal) : undefined;
    const credential = upstream.credentials.prefetch?.({ principal, signal: ctx.signal });
    owner?.catch(() => undefined);
    credential?.catch(() => undefined);
    return { owner, credential };
  }

  async function proxy(ctx: RequestContext): Promise<void> {
    try {
      await serve(ctx);
    } catch (error) {
      ctx.log.outcome ??= ctx.signal.aborted ? 'cancelled' : (error as { status?: number }).status === 401 || (error as { status?: number }).status === 403 ? 'denied' : 'error';
      throw error;
    }
  }

  /** The access log's `user` (log.user); never a token, never a session id. */
  const logUser = options.logUser ?? 'sub';
  function noteUser(ctx: RequestContext, principal: Principal | undefined): void {
    if (!principal || logUser === 'none') return;
    const user = logUser === 'sub' ? (principal.idpSubject ?? principal.subject) : principal.subject;
    ctx.log.user = user.length > 128 ? `${user.slice(0, 128)}…` : user;
  }

  async function serve(ctx: RequestContext): Promise<void> {
    const upstream = upstreamFor(ctx);
    checkOrigin(ctx);
    let early: EarlyReads | undefined;
    const principal = await authenticateFirst(ctx, upstream, (p) => void (early = startReads(ctx, upstream, p)));
    noteUser(ctx, principal);
    if (ctx.req.method !== 'POST') return relay(ctx, upstream, principal, undefined, early);
    // Booked in the in-flight budget while it is read, released once the request is answered (a
    // replay after an upstream 401 needs it until then).
    const body = await readBody(ctx.req, options.maxBodyBytes, options.bodyBudget).catch(async (error: unknown) => {
      if (error instanceof PayloadTooLarge) {
        await discardBody(ctx.req, { maxBytes: options.maxBodyBytes + OVERSIZE_DISCARD.extraBytes, timeoutMs: OVERSIZE_DISCARD.timeoutMs });
      }
      throw error;
    });
    try {
      return await relay(ctx, upstream, principal, body, early);
    } finally {
      options.bodyBudget?.release(body.length);
    }
  }

  async function relay(ctx: RequestContext, upstream: Upstream, principal: Principal | undefined, body: Buffer | undefined, early?: EarlyReads): Promise<void> {
    const method = ctx.req.method!;
    let rpc: RpcInfo | undefined;
    if (body) {
      rpc = inspectRpc(body);
      ctx.rpcId = rpc.id;
      // Cut: the method is the client's text (a 500 KB method was a 500 KB log line).
      if (rpc.method) ctx.log.rpc = rpc.method.length > 128 ? `${rpc.method.slice(0, 128)}…` : rpc.method;
      if (rpc.toolName !== undefined) {
        ctx.log.tool = rpc.toolName.length > 128 ? `${rpc.toolName.slice(0, 128)}…` : rpc.toolName;
        // Counted once the answer is complete (or failed), whatever path it took.
        const toolName = rpc.toolName;
        ctx.res.once('close', () => {
          options.metrics.toolCalls.inc({ upstream: upstream.name, tool: options.toolCatalog?.label(upstream.name, toolName) ?? 'other', outcome: String(ctx.log.outcome ?? 'error') });
        });
      }
    }
    const mcpSessionId = headerValue(ctx.req.headers, 'mcp-session-id');
    if (mcpSessionId) ctx.log.session = sessionTag(mcpSessionId);
    if (principal) ctx.log.sid = sessionTag(principal.sessionId);
    const owners = principal ? options.sessionOwners : undefined;
    // Another user's session id is an unknown session here (404), before anything uses it.
    if (owners && mcpSessionId) await (early?.owner ?? owners.check({ upstream: upstream.name, mcpSessionId, user: principal!.subject }, ctx.signal));
    const capabilities = options.clientCapabilities;
    const protocolVersion = headerValue(ctx.req.headers, 'mcp-protocol-version');
    // Awaited: the record is shared by every replica and a store failure is a 503 like any other
    // (the cache makes this free for a session this replica has seen in the last touch interval).
    if (protocolVersion) await capabilities?.noteProtocolVersion({ upstream: upstream.name, mcpSessionId, sessionId: principal?.sessionId, protocolVersion }, ctx.signal);
    const credentialRequest: CredentialRequest = { principal, rpc, mcpSessionId, signal: ctx.signal, prefetched: early?.credential };
    // ctx.url is parsed on first use: only a target with a query needs it.
    const search = ctx.req.url?.includes('?') ? ctx.url.search : '';
    const path = upstream.url.pathname + upstream.url.search + (upstream.url.search ? search.replace(/^\?/, '&') : search);

    /** auth_required goes to the agent by channel; anything else is thrown as it was. */
    const answerAuthRequired = async (error: unknown): Promise<void> => {
      if (!(error instanceof AuthRequiredError) || !options.authRequired) throw error;
      ctx.log.outcome = 'auth_required';
      await options.authRequired.render({ ctx, upstream, rpc, mcpSessionId, principal, authRequired: error.authRequired });
    };
    const observe = observerFor(ctx, upstream, rpc);
    // A GET stream of a session can carry our notifications/elicitation/complete.
    let unregisterStream: (() => void) | undefined;
    const streams = method === 'GET' && mcpSessionId ? options.streams : undefined;
    const streamVersion = streams && !protocolVersion ? (await capabilities?.get({ upstream: upstream.name, mcpSessionId }, ctx.signal))?.protocolVersion : protocolVersion;
    // What initialize declared (its capabilities) and, with login, whose session it opens are stored
    // before the agent sees the answer: its next request may reach another replica, and must find them.
    const recordInitialize =
      rpc?.method === 'initialize' && (capabilities || owners)
        ? (status: number, headers: IncomingHttpHeaders): Promise<void> | undefined => {
            if (status >= 300) return undefined;
            const issued = headerValue(headers, 'mcp-session-id');
            const writes: Array<Promise<unknown>> = [];
            if (capabilities) {
              writes.push(capabilities.recordInitialize({ upstream: upstream.name, mcpSessionId: issued, sessionId: principal?.sessionId, capabilities: rpc.capabilities }, ctx.signal));
            }
            if (owners && issued) writes.push(owners.record({ upstream: upstream.name, mcpSessionId: issued, owner: principal!.subject }, ctx.signal));
            return writes.length > 0 ? Promise.all(writes).then(() => undefined) : undefined;
          }
        : undefined;

    for (let attempt = 0; ; attempt++) {
      let credential;
      try {
        credential = await (tracer.enabled
          ? tracer.trace('credentials', (span) => (span.set('mcpgate.upstream', upstream.name), upstream.credentials.headers(credentialRequest)))
          : upstream.credentials.headers(credentialRequest));
      } catch (error) {
        return answerAuthRequired(error);
      } finally {
        // A retry after an upstream 401 reads the credential afresh.
        credentialRequest.prefetched = undefined;
      }
      let outcome;
      // A child of the request's span (not made current: nothing below forward() starts spans).
      const upstreamSpan = tracer.enabled ? tracer.start('upstream', { kind: SpanKind.CLIENT, attributes: { 'mcpgate.upstream': upstream.name, 'http.request.method': method } }) : undefined;
      try {
        outcome = await forward({
          dispatcher: upstream.dispatcher,
          origin: upstream.url.origin,
          path,
          method,
          headers: upstreamRequestHeaders(ctx.req.headers, { clientIp: ctx.clientIp, proto: ctx.forwardedProto, host: ctx.forwardedHost }, credential, upstreamSpan?.traceparent()),
          body,
          res: ctx.res,
          signal: ctx.signal,
          headersTimeoutMs: options.upstreamTimeoutMs,
          place: { url: upstream.url, gatewayPath: `${options.basePath}/${encodeURIComponent(upstream.name)}/mcp` },
          sseKeepAliveMs: options.sseKeepAliveMs,
          hold: (status, headers) => isAuthRejection(status, headers),
          // Before the response ends: the access-log line is written on 'close'.
          onCut: () => void (ctx.log.cut = true),
          beforeResponse: recordInitialize,
          endStream: drain && (method === 'GET' ? drain.signal : requestsEnd.signal),
          observe,
          onStream: (open) => (open ? options.metrics.openStreams.inc({ upstream: upstream.name }) : options.metrics.openStreams.dec({ upstream: upstream.name })),
          onSse: streams
            ? (injector) => {
                unregisterStream = streams.register({
                  upstream: upstream.name,
                  mcpSessionId: mcpSessionId!,
                  sessionId: principal?.sessionId,
                  protocolVersion: streamVersion,
                  sink: { deliver: (event) => injector.inject(event) },
                });
              }
            : undefined,
        });
      } catch (error) {
        upstreamSpan?.fail(error instanceof UpstreamError ? error.kind : 'error');
        if (ctx.signal.aborted) {
          ctx.log.outcome = 'cancelled';
          return; // the agent left: nobody to answer
        }
        throw upstreamFailure(error, upstream);
      } finally {
        unregisterStream?.();
        if (upstreamSpan) {
          if (outcome) upstreamSpan.set('http.response.status_code', outcome.kind === 'sent' ? outcome.status : outcome.rejection.status);
          upstreamSpan.end();
        }
      }
      if (outcome.kind === 'sent') {
        if (outcome.cut) options.metrics.upstreamErrors.inc({ upstream: upstream.name, kind: 'cut' });
        if (owners && mcpSessionId && method === 'DELETE' && outcome.status < 300) {
          // The agent ended its session: its id is never served again. A store failure here only leaves the record to expire.
          await owners.forget({ upstream: upstream.name, mcpSessionId }).catch(() => undefined);
        }
        if (rpc?.method === 'initialize' && outcome.status < 300) {
          const sessionId = headerValue(ctx.res.getHeaders() as IncomingHttpHeaders, 'mcp-session-id');
          if (sessionId) options.onInitialize?.({ upstream, rpc, mcpSessionId: sessionId });
        }
        return;
      }
      ctx.log.upstreamStatus = outcome.rejection.status;
      ctx.log.outcome = 'upstream_error';
      const decision = await upstream.credentials.rejected(credentialRequest, outcome.rejection, attempt);
      switch (decision.action) {
        case 'retry':
          if (attempt === 0) continue;
          throw new BadGateway(`upstream "${upstream.name}" refused the credential again after a refresh`);
        case 'respond':
          return answerAuthRequired(decision.error);
        case 'reply':
          ctx.res.writeHead(decision.reply.status, { ...decision.reply.headers, 'content-length': Buffer.byteLength(decision.reply.body) });
          ctx.res.end(decision.reply.body);
          return;
        case 'pass': {
          const { status, headers, body: held } = outcome.rejection;
          ctx.res.writeHead(status, { 'content-type': String(headers['content-type'] ?? 'application/json'), 'content-length': held.length });
          ctx.res.end(held);
          return;
        }
      }
    }
  }

  /**
   * The audit's view of a forwarded answer: the upstream status and outcome as soon as the head
   * passes (the access-log line can be written before `forward` resolves), and for `tools/list`
   * and `tools/call` a tap that reads the tool names and the error flag as the bytes stream by.
   */
  function observerFor(ctx: RequestContext, upstream: Upstream, rpc: RpcInfo | undefined): ResponseObserver {
    const head = (status: number) => {
      ctx.log.upstreamStatus = status;
      ctx.log.outcome = status < 400 ? 'ok' : 'upstream_error';
    };
    const method = rpc?.id !== undefined ? rpc.method : undefined;
    const catalog = options.toolCatalog;
    if (method === 'tools/list' && catalog) {
      const tap = createRpcResponseTap({
        maxBytes: TAP_BYTES.list,
        onMessage: (m) => {
          if (m.id === rpc!.id && 'result' in m) catalog.learn(upstream.name, m.result);
        },
      });
      return { head: (status, headers) => (head(status), tap.head(status, headers)), data: tap.data, end: tap.end };
    }
    if (method === 'tools/call') {
      const tap = createRpcResponseTap({
        maxBytes: TAP_BYTES.call,
        onMessage: (m) => {
          if (m.id !== rpc!.id) return;
          const result = m.result as { isError?: unknown } | undefined;
          if ('error' in m || result?.isError === true) ctx.log.outcome = 'tool_error';
        },
      });
      return { head: (status, headers) => (head(status), tap.head(status, headers)), data: tap.data, end: tap.end };
    }
    return { head, data: noop, end: noop };
  }

  function upstreamFailure(error: unknown, upstream: Upstream): Error {
    if (!(error instanceof UpstreamError)) return error as Error;
    options.metrics.upstreamErrors.inc({ upstream: upstream.name, kind: error.kind });
    if (error.kind === 'redirect') {
      return new BadGateway(`upstream "${upstream.name}" answered with a redirect to somewhere this gateway does not serve`, { cause: error });
    }
    if (error.kind === 'timeout') {
      return new GatewayTimeout(`upstream "${upstream.name}" did not answer within ${options.upstreamTimeoutMs / 1000} s`, { cause: error });
    }
    return new BadGateway(`upstream "${upstream.name}" is unreachable`, { cause: error });
  }

  const path = `${options.basePath}/:upstream/mcp`;
  return [
    { method: ['POST', 'GET', 'DELETE'], path, handler: proxy, errorStyle: 'jsonrpc', name: '/{upstream}/mcp' },
    { method: 'OPTIONS', path, handler: preflight, errorStyle: 'jsonrpc', name: '/{upstream}/mcp' },
  ];
}

/** Store reads started while the session's liveness was being checked (`startReads`). */
interface EarlyReads {
  owner: Promise<void> | undefined;
  credential: Promise<unknown> | undefined;
}

/** An upstream 401, or a 403 whose challenge says `insufficient_scope` (step-up). */
function isAuthRejection(status: number, headers: IncomingHttpHeaders): boolean {
  if (status === 401) return true;
  if (status !== 403) return false;
  const challenge = headers['www-authenticate'];
  return challenge !== undefined && /insufficient_scope/i.test(String(challenge));
}

function noop(): void {}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : typeof value === 'string' ? value : undefined;
}
