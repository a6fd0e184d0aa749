import type { IncomingHttpHeaders } from 'node:http';
import type { Logger } from '../observability/logger.ts';
import { sessionTag } from '../observability/logger.ts';
import type { GatewayMetrics } from '../observability/metrics.ts';
import { readBody } from '../http/body.ts';
import type { BodyBudget } from '../http/body-budget.ts';
import { BadGateway, Forbidden, GatewayTimeout, NotFound } from '../http/errors.ts';
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
}

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
 * The routes of `/{name}/mcp`: check the origin, authenticate, read and inspect the body
 * (bounded per request and in total), resolve the upstream credential, forward streaming, and hand upstream 401/403s
 * to the credential source before any byte reaches the agent.
 */
export function createMcpRoutes(options: McpRouteOptions): Route[] {
  const byName = new Map(options.upstreams.map((u) => [u.name, u]));
  const allowedOrigins = new Set([options.publicOrigin, ...options.allowedOrigins]);

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
  async function authenticateFirst(ctx: RequestContext, upstream: Upstream): Promise<Principal | undefined> {
    try {
      return await options.authenticator.authenticate(ctx, upstream);
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

  async function proxy(ctx: RequestContext): Promise<void> {
    const upstream = upstreamFor(ctx);
    checkOrigin(ctx);
    const principal = await authenticateFirst(ctx, upstream);
    if (ctx.req.method !== 'POST') return relay(ctx, upstream, principal, undefined);
    // Booked in the in-flight budget while it is read, released once the request is answered (a
    // replay after an upstream 401 needs it until then).
    const body = await readBody(ctx.req, options.maxBodyBytes, options.bodyBudget);
    try {
      return await relay(ctx, upstream, principal, body);
    } finally {
      options.bodyBudget?.release(body.length);
    }
  }

  async function relay(ctx: RequestContext, upstream: Upstream, principal: Principal | undefined, body: Buffer | undefined): Promise<void> {
    const method = ctx.req.method!;
    let rpc: RpcInfo | undefined;
    if (body) {
      rpc = inspectRpc(body);
      ctx.rpcId = rpc.id;
      // Cut: the method is the client's text (a 500 KB method was a 500 KB log line).
      if (rpc.method) ctx.log.rpc = rpc.method.length > 128 ? `${rpc.method.slice(0, 128)}…` : rpc.method;
    }
    const mcpSessionId = headerValue(ctx.req.headers, 'mcp-session-id');
    if (mcpSessionId) ctx.log.session = sessionTag(mcpSessionId);
    if (principal) ctx.log.sid = sessionTag(principal.sessionId);
    const owners = principal ? options.sessionOwners : undefined;
    // Another user's session id is an unknown session here (404), before anything uses it.
    if (owners && mcpSessionId) await owners.check({ upstream: upstream.name, mcpSessionId, user: principal!.subject }, ctx.signal);
    const protocolVersion = headerValue(ctx.req.headers, 'mcp-protocol-version');
    if (protocolVersion) options.clientCapabilities?.noteProtocolVersion({ upstream: upstream.name, mcpSessionId, sessionId: principal?.sessionId, protocolVersion });
    const credentialRequest: CredentialRequest = { principal, rpc, mcpSessionId, signal: ctx.signal };
    // ctx.url is parsed on first use: only a target with a query needs it.
    const search = ctx.req.url?.includes('?') ? ctx.url.search : '';
    const path = upstream.url.pathname + upstream.url.search + (upstream.url.search ? search.replace(/^\?/, '&') : search);

    /** auth_required goes to the agent by channel; anything else is thrown as it was. */
    const answerAuthRequired = async (error: unknown): Promise<void> => {
      if (!(error instanceof AuthRequiredError) || !options.authRequired) throw error;
      await options.authRequired.render({ ctx, upstream, rpc, mcpSessionId, principal, authRequired: error.authRequired });
    };
    // A GET stream of a session can carry our notifications/elicitation/complete.
    let unregisterStream: (() => void) | undefined;
    const streams = method === 'GET' && mcpSessionId ? options.streams : undefined;

    for (let attempt = 0; ; attempt++) {
      let credential;
      try {
        credential = await upstream.credentials.headers(credentialRequest);
      } catch (error) {
        return answerAuthRequired(error);
      }
      let outcome;
      try {
        outcome = await forward({
          dispatcher: upstream.dispatcher,
          origin: upstream.url.origin,
          path,
          method,
          headers: upstreamRequestHeaders(ctx.req.headers, { clientIp: ctx.clientIp, proto: ctx.forwardedProto, host: ctx.forwardedHost }, credential),
          body,
          res: ctx.res,
          signal: ctx.signal,
          headersTimeoutMs: options.upstreamTimeoutMs,
          place: { url: upstream.url, gatewayPath: `${options.basePath}/${encodeURIComponent(upstream.name)}/mcp` },
          sseKeepAliveMs: options.sseKeepAliveMs,
          hold: (status, headers) => isAuthRejection(status, headers),
          // The owner of a new session is in the store before the agent learns its id.
          beforeSend:
            owners && rpc?.method === 'initialize'
              ? (status, headers) => {
                  const issued = headerValue(headers, 'mcp-session-id');
                  if (status >= 300 || !issued) return undefined;
                  return owners.record({ upstream: upstream.name, mcpSessionId: issued, owner: principal!.subject }, ctx.signal);
                }
              : undefined,
          // Before the response ends: the access-log line is written on 'close'.
          onCut: () => void (ctx.log.cut = true),
          onStream: (open) => (open ? options.metrics.openStreams.inc({ upstream: upstream.name }) : options.metrics.openStreams.dec({ upstream: upstream.name })),
          onSse: streams
            ? (injector) => {
                unregisterStream = streams.register({
                  upstream: upstream.name,
                  mcpSessionId: mcpSessionId!,
                  sessionId: principal?.sessionId,
                  protocolVersion: protocolVersion ?? options.clientCapabilities?.get({ upstream: upstream.name, mcpSessionId })?.protocolVersion,
                  sink: { deliver: (event) => injector.inject(event) },
                });
              }
            : undefined,
        });
      } catch (error) {
        if (ctx.signal.aborted) return; // the agent left: nobody to answer
        throw upstreamFailure(error, upstream);
      } finally {
        unregisterStream?.();
      }
      if (outcome.kind === 'sent') {
        if (outcome.cut) options.metrics.upstreamErrors.inc({ upstream: upstream.name, kind: 'cut' });
        if (owners && mcpSessionId && method === 'DELETE' && outcome.status < 300) {
          // The agent ended its session: its id is never served again. A store failure here only leaves the record to expire.
          await owners.forget({ upstream: upstream.name, mcpSessionId }).catch(() => undefined);
        }
        if (rpc?.method === 'initialize' && outcome.status < 300) {
          const sessionId = headerValue(ctx.res.getHeaders() as IncomingHttpHeaders, 'mcp-session-id');
          // Also under our sid: a stateless upstream issues no Mcp-Session-Id.
          options.clientCapabilities?.recordInitialize({ upstream: upstream.name, mcpSessionId: sessionId, sessionId: principal?.sessionId, capabilities: rpc.capabilities });
          if (sessionId) options.onInitialize?.({ upstream, rpc, mcpSessionId: sessionId });
        }
        return;
      }
      ctx.log.upstreamStatus = outcome.rejection.status;
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

/** An upstream 401, or a 403 whose challenge says `insufficient_scope` (step-up). */
function isAuthRejection(status: number, headers: IncomingHttpHeaders): boolean {
  if (status === 401) return true;
  if (status !== 403) return false;
  const challenge = headers['www-authenticate'];
  return challenge !== undefined && /insufficient_scope/i.test(String(challenge));
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : typeof value === 'string' ? value : undefined;
}
