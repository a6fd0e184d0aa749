import type { Logger } from '../observability/logger.ts';
import type { GatewayMetrics } from '../observability/metrics.ts';
import { NOOP_TRACER, type Tracer } from '../observability/tracing.ts';
import type { BodyBudget } from '../http/body-budget.ts';
import type { RequestContext, Route } from '../http/router.ts';
import type { Authenticator } from './authenticate.ts';
import type { AuthRequiredRenderer } from './challenge.ts';
import type { ClientCapabilities } from './client-capabilities.ts';
import type { RpcInfo } from './jsonrpc.ts';
import type { McpExchange, McpRoute, ServedUpstream } from './mcp-exchange.ts';
import {
  afterSent,
  authenticate,
  beginExchange,
  checkOrigin,
  checkSession,
  forwardUpstream,
  inspectBody,
  noteSessions,
  readRequestBody,
  resolveCredential,
  upstreamFor,
} from './mcp-request.ts';
import { countToolCall } from './observe.ts';
import { handleRejection } from './rejection.ts';
import type { SessionOwners } from './session-owner.ts';
import type { StreamRegistry } from './stream-registry.ts';
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
   * Who the access-log line names (`log.user`): `claim` the user as the gateway knows them
   * (`idp.userClaim`), `sub` the IdP's `sub`, `none` nobody. Default `claim`.
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

const CORS_ALLOW_HEADERS = 'authorization, content-type, accept, mcp-session-id, mcp-protocol-version, last-event-id, mcp-method, mcp-name';

/**
 * The routes of `/{name}/mcp`: check the origin, authenticate, read and inspect the body
 * (bounded per request and in total), resolve the upstream credential, forward streaming, and hand upstream 401/403s
 * to the credential source before any byte reaches the agent.
 */
export function createMcpRoutes(options: McpRouteOptions): Route[] {
  const route = routeOf(options);
  const path = `${options.basePath}/:upstream/mcp`;
  return [
    { method: ['POST', 'GET', 'DELETE'], path, handler: (ctx) => serve(route, ctx), errorStyle: 'jsonrpc', name: '/{upstream}/mcp' },
    { method: 'OPTIONS', path, handler: (ctx) => preflight(route, ctx), errorStyle: 'jsonrpc', name: '/{upstream}/mcp' },
  ];
}

/** The options as every request reads them: defaults applied, the drain's grace timer armed. */
function routeOf(options: McpRouteOptions): McpRoute {
  const drain = options.drain;
  /** Aborted `requestGraceMs` after the drain began: the end of the answers to requests in flight. */
  const requestsEnd = new AbortController();
  drain?.signal.addEventListener('abort', () => setTimeout(() => requestsEnd.abort(), drain.requestGraceMs).unref(), { once: true });
  return {
    byName: new Map(options.upstreams.map((u) => [u.name, served(u, options)])),
    allowedOrigins: new Set([options.publicOrigin, ...options.allowedOrigins]),
    authenticator: options.authenticator,
    metrics: options.metrics,
    maxBodyBytes: options.maxBodyBytes,
    bodyBudget: options.bodyBudget,
    upstreamTimeoutMs: options.upstreamTimeoutMs,
    sseKeepAliveMs: options.sseKeepAliveMs,
    onInitialize: options.onInitialize,
    authRequired: options.authRequired,
    clientCapabilities: options.clientCapabilities,
    streams: options.streams,
    sessionOwners: options.sessionOwners,
    drain: drain?.signal,
    requestsEnd: requestsEnd.signal,
    logUser: options.logUser ?? 'claim',
    toolCatalog: options.toolCatalog,
    tracer: options.tracer ?? NOOP_TRACER,
  };
}

/** What each request to `upstream` would otherwise work out again (mcp-exchange.ts `ServedUpstream`). */
function served(upstream: Upstream, options: McpRouteOptions): ServedUpstream {
  const { url } = upstream;
  const labels = { upstream: upstream.name };
  const streams = options.metrics.openStreams;
  return {
    upstream,
    origin: url.origin,
    path: url.pathname + url.search,
    hasQuery: url.search !== '',
    place: { url, gatewayPath: `${options.basePath}/${encodeURIComponent(upstream.name)}/mcp` },
    onStream: (open) => (open ? streams.inc(labels) : streams.dec(labels)),
  };
}

async function preflight(route: McpRoute, ctx: RequestContext): Promise<void> {
  upstreamFor(route, ctx);
  checkOrigin(route, ctx);
  ctx.res.writeHead(204, {
    'access-control-allow-methods': 'GET, POST, DELETE',
    'access-control-allow-headers': CORS_ALLOW_HEADERS,
    'access-control-max-age': '600',
  });
  ctx.res.end();
}

/**
 * One MCP request, as its steps (mcp-request.ts): authenticate, read and inspect the body, check
 * the session, resolve the credential, forward; an upstream 401/403 held back goes to the
 * credential source (rejection.ts), which may ask for one retry with a fresh credential.
 */
async function serve(route: McpRoute, ctx: RequestContext): Promise<void> {
  let x: McpExchange | undefined;
  try {
    x = beginExchange(route, ctx);
    // A step with nothing to wait for returns undefined: awaiting it would still cost a turn.
    const authenticated = authenticate(route, x);
    if (authenticated) await authenticated;
    if (x.method === 'POST') {
      await readRequestBody(route, x);
      inspectBody(x);
    }
    noteSessions(x);
    const checked = checkSession(route, x);
    if (checked) await checked;
    for (let attempt = 0; ; attempt++) {
      const resolving = resolveCredential(route, x);
      const credential = resolving instanceof Promise ? await resolving : resolving;
      if (!credential) return; // answered: the user must authorize
      const outcome = await forwardUpstream(route, x, credential);
      if (!outcome) return; // the agent left
      if (outcome.kind === 'sent') {
        const forgetting = afterSent(route, x, outcome);
        if (forgetting) await forgetting;
        return;
      }
      if ((await handleRejection(route, x, outcome.rejection, attempt)) === 'answered') return;
    }
  } catch (error) {
    ctx.log.outcome ??= ctx.signal.aborted ? 'cancelled' : (error as { status?: number }).status === 401 || (error as { status?: number }).status === 403 ? 'denied' : 'error';
    throw error;
  } finally {
    if (x?.body) route.bodyBudget?.release(x.body.length);
    if (x?.rpc?.toolName !== undefined) countToolCall(route, x, x.rpc.toolName);
  }
}
