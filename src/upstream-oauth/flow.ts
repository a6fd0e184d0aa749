/**
 * The upstream OAuth flow: connecting one user's session to an upstream MCP server
 * that trusts its own authorization server, and keeping that connection alive. This module
 * assembles the engine and is what the rest of the gateway imports; the steps live in:
 *
 * - `flow-start.ts` (`startFlow`): discovery (RFC 9728 → RFC 8414), a client at that server, a
 *   single-use state with a server-side PKCE verifier; answers with the `AuthRequired` signal
 *   whose URL points at our `/oauth/upstream/start`. Concurrent requests share one pending flow.
 * - `code-exchange.ts` (`authorizationUrl`, `complete`): the callback's RFC 9207 `iss` check and
 *   the code exchange with PKCE and RFC 8707 `resource`, the token stored for (session, upstream).
 * - `token-refresh.ts` (`refresh`, and the revocation of `disconnect`): RFC 6749 §6, one in flight
 *   per (session, upstream) across the fleet; a 4xx drops the row, a 5xx keeps it and answers 503.
 *   `disconnect` forgets the token and revokes it at the upstream (RFC 7009) where supported.
 */
import { createSingleFlight, type SingleFlight } from '../credentials/single-flight.ts';
import type { Logger } from '../observability/logger.ts';
import type { Counter } from '../observability/metrics.ts';
import { NOOP_TRACER, type Tracer } from '../observability/tracing.ts';
import type { AuthRequired } from './auth-required.ts';
import type { ClientRegistration } from './client-registration.ts';
import { authorizationUrl, completeFlow, type ExchangeDeps } from './code-exchange.ts';
import type { Discovery } from './discovery.ts';
import { startFlow, type StartDeps, type StartFlowOptions } from './flow-start.ts';
import type { UpstreamFlow, UpstreamToken } from './records.ts';
import type { UpstreamStores } from './stores.ts';
import type { TokenFetch } from './token-endpoint.ts';
import { refreshToken, revokeGrant, type RefreshDeps } from './token-refresh.ts';

// The flow's types and errors, where the rest of the gateway has always found them.
export { chooseIssuer, cleanScopes, IssuerRefusedError, sameIssuer, type FlowPrincipal, type OAuthUpstream, type StartFlowOptions } from './flow-start.ts';
export { FlowError, type FlowFailure } from './code-exchange.ts';
export { RefreshRejectedError, type RefreshOutcome } from './token-refresh.ts';

/** Options of {@link createUpstreamFlows}; validated when it is called. */
export interface UpstreamFlowsOptions {
  stores: UpstreamStores;
  discovery: Discovery;
  registration: ClientRegistration;
  /** The SSRF-guarded fetcher, for token and revocation endpoints. */
  fetch: TokenFetch;
  /** Our public URL (issuer), the base of `/oauth/upstream/start`. */
  publicUrl: string;
  /** Lifetime of a pending flow, in milliseconds. Default 600000 (10 min). */
  flowTtlMs?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
  /**
   * `mcpgate_auth_flows_total{upstream, outcome}` (started, completed, failed) and
   * `mcpgate_token_refreshes_total{kind="oauth", upstream, outcome}` (see {@link RefreshOutcome}).
   * Default: not counted. A refused issuer (a preconfigured client's upstream naming another
   * authorization server) counts as `outcome="issuer_refused"`.
   */
  metrics?: { authFlows: Counter; refreshes: Counter };
  /**
   * Keeps refreshes to one per (session, upstream) in flight: in process by default, across the
   * fleet with `createFleetSingleFlight` (a rotating refresh token used twice revokes the grant).
   */
  singleFlight?: SingleFlight;
  /** Where refusals worth an operator's attention are logged (a refused issuer). Default: not logged. */
  logger?: Pick<Logger, 'warn'>;
  /** With tracing on, each refresh is a span `refresh oauth` under the request's credential span. Default off. */
  tracer?: Tracer;
}

/** See {@link createUpstreamFlows}. */
export interface UpstreamFlows {
  /** Returns the session's pending flow for the upstream when it covers the scopes, else starts one. @throws BadGateway when discovery or registration fails. */
  startFlow(options: StartFlowOptions): Promise<AuthRequired>;
  /** The URL of the upstream server's authorization endpoint for this flow (RFC 6749 §4.1.1, PKCE S256, RFC 8707). */
  authorizationUrl(flow: UpstreamFlow): string;
  /**
   * Turns the callback's parameters into a stored token. Call after the state was taken.
   * @throws FlowError
   */
  complete(flow: UpstreamFlow, params: URLSearchParams, signal?: AbortSignal): Promise<UpstreamToken>;
  /** The session's token for an upstream, if connected. */
  token(sessionId: string, upstream: string): Promise<UpstreamToken | undefined>;
  /**
   * Refreshes the session's token for an upstream; one refresh in flight per (session, upstream)
   * across the fleet (the `singleFlight` option). With `stale`, the stored row is checked again
   * inside the flight and returned as is when `stale` says it is fine (another request, maybe on
   * another replica, refreshed it meanwhile): that is what keeps a race at one token request.
   * @throws RefreshRejectedError (row dropped) or ServiceUnavailable (row kept).
   */
  refresh(sessionId: string, upstream: string, stale?: (token: UpstreamToken) => boolean): Promise<UpstreamToken>;
  /** Forgets the token and revokes it at the upstream (RFC 7009) when it lists a revocation endpoint. */
  disconnect(sessionId: string, upstream: string): Promise<{ connected: boolean; revoked: boolean }>;
  /**
   * Logout: forgets (and revokes) every upstream token of a session. Resolves with how many rows
   * were forgotten and how many of them the upstream's authorization server confirmed revoked
   * (a server without a revocation endpoint, or one that failed, leaves the grant to expire there).
   */
  forgetSession(sessionId: string): Promise<{ forgotten: number; revoked: number }>;
}

const FLOW_TTL_MS = 10 * 60_000;
const NOT_COUNTED: Counter = { inc: () => undefined };

/** Creates the flow engine. @throws TypeError for an invalid `flowTtlMs`. */
export function createUpstreamFlows(options: UpstreamFlowsOptions): UpstreamFlows {
  const { stores, discovery, registration, fetch } = options;
  const base = options.publicUrl.replace(/\/+$/, '');
  const now = options.now ?? Date.now;
  const flowTtlMs = options.flowTtlMs ?? FLOW_TTL_MS;
  if (!Number.isSafeInteger(flowTtlMs) || flowTtlMs <= 0) throw new TypeError('upstream flows: flowTtlMs must be a positive integer');
  const { authFlows, refreshes } = options.metrics ?? { authFlows: NOT_COUNTED, refreshes: NOT_COUNTED };
  const starting = new Map<string, Promise<AuthRequired>>();
  const start: StartDeps = { stores, discovery, registration, base, flowTtlMs, now, authFlows, logger: options.logger, starting };
  const exchange: ExchangeDeps = { stores, registration, fetch, now, authFlows };
  const singleFlight = options.singleFlight ?? createSingleFlight();
  const refresh: RefreshDeps = { stores, registration, fetch, now, refreshes, singleFlight, tracer: options.tracer ?? NOOP_TRACER };

  return {
    startFlow: (o) => startFlow(start, o),
    authorizationUrl: (flow) => authorizationUrl(exchange, flow),
    complete: (flow, params, abort) => completeFlow(exchange, flow, params, abort),
    token: (sessionId, upstream) => stores.tokens.get(sessionId, upstream),
    refresh: (sessionId, upstream, stale) => refreshToken(refresh, sessionId, upstream, stale),

    async disconnect(sessionId, upstream) {
      const row = await stores.tokens.take(sessionId, upstream);
      if (!row) return { connected: false, revoked: false };
      return { connected: true, revoked: await revokeGrant(refresh, row) };
    },

    async forgetSession(sessionId) {
      const rows = await stores.tokens.forgetSession(sessionId);
      const revoked = await Promise.all(rows.map((row) => revokeGrant(refresh, row)));
      return { forgotten: rows.length, revoked: revoked.filter(Boolean).length };
    },
  };
}
