/**
 * One MCP request on its way through `/{name}/mcp`, in two parts: what the route was built with
 * ({@link McpRoute}, once per route) and what one request carries from step to step
 * ({@link McpExchange}, one object per request). The steps (mcp-request.ts, observe.ts,
 * rejection.ts) are free functions of both, so a request allocates its state once rather than a
 * closure per step. Nothing here imports a step: the steps import this.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { GatewayMetrics } from '../observability/metrics.ts';
import type { Tracer } from '../observability/tracing.ts';
import type { BodyBudget } from '../http/body-budget.ts';
import type { RequestContext } from '../http/router.ts';
import type { CredentialRequest } from '../credentials/types.ts';
import type { Authenticator } from './authenticate.ts';
import type { AuthRequiredRenderer } from './challenge.ts';
import type { ClientCapabilities } from './client-capabilities.ts';
import type { UpstreamPlace } from './headers.ts';
import type { RpcInfo } from './jsonrpc.ts';
import type { SessionOwners } from './session-owner.ts';
import type { StreamRegistry } from './stream-registry.ts';
import type { ToolCatalog } from './tool-catalog.ts';
import type { Upstream } from './upstream.ts';

/**
 * What every request of the MCP route reads: the route's options with their defaults applied,
 * and what is derived from them once (`mcp-route.ts` builds it when the routes are created).
 */
export interface McpRoute {
  byName: Map<string, ServedUpstream>;
  /** Our own origin and the configured ones: the acceptable `Origin` values. */
  allowedOrigins: Set<string>;
  authenticator: Authenticator;
  metrics: GatewayMetrics;
  maxBodyBytes: number;
  bodyBudget: BodyBudget | undefined;
  upstreamTimeoutMs: number;
  sseKeepAliveMs: number | undefined;
  onInitialize: ((info: { upstream: Upstream; rpc: RpcInfo; mcpSessionId: string }) => void) | undefined;
  authRequired: AuthRequiredRenderer | undefined;
  clientCapabilities: ClientCapabilities | undefined;
  streams: StreamRegistry | undefined;
  sessionOwners: SessionOwners | undefined;
  /** Aborted when the drain begins: GET streams end at their next event boundary. */
  drain: AbortSignal | undefined;
  /** Aborted `requestGraceMs` after the drain began: the end of the answers to requests in flight. */
  requestsEnd: AbortSignal;
  logUser: 'none' | 'sub' | 'claim';
  toolCatalog: ToolCatalog | undefined;
  tracer: Tracer;
}

/**
 * An upstream as the route serves it, with what every request to it would otherwise work out
 * again: the parts of its URL (each read of a `URL` getter builds a new string), where we serve it,
 * and its open-stream gauge.
 */
export interface ServedUpstream {
  upstream: Upstream;
  /** `upstream.url.origin`. */
  origin: string;
  /** The upstream's path and query (`pathname + search`); the agent's query is appended to it. */
  path: string;
  /** True when the upstream's URL has a query of its own (the agent's is then appended with `&`). */
  hasQuery: boolean;
  /** Where the upstream lives and where we serve it (`{basePath}/{name}/mcp`), for its `Location` headers. */
  place: UpstreamPlace;
  /** Moves this upstream's open-stream gauge (forward.ts `onStream`). */
  onStream(open: boolean): void;
}

/**
 * One request of the MCP route, filled in as its steps run. It is also the request the upstream's
 * credential source sees (`headers`, `rejected`): one object for both, and the same object on a
 * retry, as the sources that remember what they sent (by request) need.
 */
export interface McpExchange extends CredentialRequest {
  ctx: RequestContext;
  upstream: Upstream;
  served: ServedUpstream;
  /** The agent's method: POST, GET or DELETE. */
  method: string;
  /** The POST body, booked in the in-flight budget until the request is answered; undefined for GET and DELETE. */
  body: Buffer | undefined;
  /** The negotiated version from `MCP-Protocol-Version`, if the agent sent one. */
  protocolVersion: string | undefined;
  /** The version our own events on a GET stream must speak: the header's, else the one the session noted. */
  streamVersion: string | undefined;
  /** The owner check started alongside the session's liveness check (`startReads`), if it was. */
  earlyOwner: Promise<void> | undefined;
}

/** The first value of a request or response header, if present. */
export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : typeof value === 'string' ? value : undefined;
}

/** The longest client text an access-log field holds, the ellipsis of a cut included. */
const LOG_TEXT_MAX = 128;

/**
 * The client's text for the access log, at most {@link LOG_TEXT_MAX} characters: a longer one is
 * cut to 127 and ends with "…" (a 500 KB method was a 500 KB log line), never inside a surrogate pair.
 */
export function logText(text: string): string {
  if (text.length <= LOG_TEXT_MAX) return text;
  let end = LOG_TEXT_MAX - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}
