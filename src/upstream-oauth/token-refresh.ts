/**
 * Keeping a connection to an upstream alive, and ending it.
 *
 * - Refresh (RFC 6749 §6): one in flight per (session, upstream) across the fleet; a 4xx drops
 *   the row (the user must connect again), a 5xx keeps it and answers 503 (an outage is never a
 *   disconnect). The row is replaced or dropped only while it still holds the refresh token used.
 * - Revocation (RFC 7009) of a grant whose row was forgotten, where the server supports it.
 */
import type { SingleFlight } from '../credentials/single-flight.ts';
import { ServiceUnavailable } from '../http/errors.ts';
import type { Counter } from '../observability/metrics.ts';
import type { Tracer } from '../observability/tracing.ts';
import { retryOnOutage } from '../store/retry.ts';
import type { ClientRegistration } from './client-registration.ts';
import type { UpstreamToken } from './records.ts';
import type { UpstreamStores } from './stores.ts';
import { forgetUnknownClient, requestToken, revokeToken, TokenEndpointError, type TokenFetch, type TokenResponse } from './token-endpoint.ts';

/** The upstream refused the refresh token (4xx): the row is gone, a new flow is needed. */
export class RefreshRejectedError extends Error {
  override name = 'RefreshRejectedError';
}

/**
 * How a refresh at an upstream's token endpoint ended: `success`; `rejected` (4xx: the row is
 * dropped); `superseded` (refused, but another replica had already rotated it: its successor is
 * used); `unavailable` (5xx or transport: the row is kept); `error` (anything else, e.g. the store).
 */
export type RefreshOutcome = 'success' | 'rejected' | 'superseded' | 'unavailable' | 'error';

/** What refreshing needs; `createUpstreamFlows` builds it once, from its validated options. */
export interface RefreshDeps {
  stores: Pick<UpstreamStores, 'tokens'>;
  /** The registration to forget when the server no longer knows it (`invalid_client`). */
  registration: Pick<ClientRegistration, 'forgetClient'>;
  /** The SSRF-guarded fetcher, for token and revocation endpoints. */
  fetch: TokenFetch;
  /** The clock, epoch milliseconds. */
  now: () => number;
  /** `mcpgate_token_refreshes_total{kind="oauth", upstream, outcome}` (see {@link RefreshOutcome}). */
  refreshes: Counter;
  /** Keeps refreshes to one per (session, upstream) in flight. */
  singleFlight: SingleFlight;
  /** Each refresh is a span `refresh oauth`. */
  tracer: Tracer;
}

/** A stored row and the version it was read at (see `UpstreamStores.tokens.read`). */
type StoredRow = { token: UpstreamToken; version: string };

/**
 * Refreshes the session's token for an upstream; one refresh in flight per (session, upstream)
 * across the fleet. With `stale`, the stored row is checked again inside the flight and returned
 * as is when `stale` says it is fine (another request, maybe on another replica, refreshed it
 * meanwhile): that is what keeps a race at one token request.
 * @throws RefreshRejectedError (row dropped) or ServiceUnavailable (row kept).
 */
export function refreshToken(deps: RefreshDeps, sessionId: string, upstream: string, stale?: (token: UpstreamToken) => boolean): Promise<UpstreamToken> {
  // Not tied to any caller's AbortSignal: every waiting request shares this refresh.
  return deps.singleFlight(`refresh:oauth:${sessionId}:${upstream}`, () =>
    deps.tracer.trace('refresh oauth', (span) => (span.set('mcpgate.upstream', upstream), refreshOnce(deps, sessionId, upstream, stale))),
  );
}

/**
 * Revokes a forgotten row's grant at the upstream (RFC 7009). True when the server confirmed;
 * false when it lists no revocation endpoint or the revocation failed.
 */
export async function revokeGrant(deps: Pick<RefreshDeps, 'fetch'>, row: UpstreamToken): Promise<boolean> {
  const endpoint = row.server.revocationEndpoint;
  if (!endpoint) return false;
  // RFC 7009 §2.1: revoking the refresh token ends the grant, and the server SHOULD invalidate
  // the access tokens issued under it (a structured JWT access token often cannot be revoked on its own).
  const [token, tokenTypeHint] = row.refreshToken ? [row.refreshToken, 'refresh_token' as const] : [row.accessToken, 'access_token' as const];
  return revokeToken({ fetch: deps.fetch, endpoint, client: row.client, token, tokenTypeHint });
}

/** One refresh inside the flight, counted by how it ended. */
async function refreshOnce(deps: RefreshDeps, sessionId: string, upstream: string, stale: ((token: UpstreamToken) => boolean) | undefined): Promise<UpstreamToken> {
  // Read inside the flight: another request, on any replica, may have refreshed since the caller looked.
  const current = await deps.stores.tokens.read(sessionId, upstream);
  if (!current) throw new RefreshRejectedError(`no token for upstream "${upstream}"`);
  if (stale && !stale(current.token)) return current.token;
  if (!current.token.refreshToken) throw new RefreshRejectedError(`the token for upstream "${upstream}" cannot be refreshed`);
  const counted = { outcome: 'error' as RefreshOutcome };
  try {
    return await refreshRow(deps, sessionId, upstream, current, counted);
  } finally {
    deps.refreshes.inc({ kind: 'oauth', upstream, outcome: counted.outcome });
  }
}

/** The token request of a refresh and the saved result; sets `counted.outcome` as it learns how it ended. */
async function refreshRow(deps: RefreshDeps, sessionId: string, upstream: string, { token: row, version }: StoredRow, counted: { outcome: RefreshOutcome }): Promise<UpstreamToken> {
  let response: TokenResponse;
  try {
    response = await requestToken({
      fetch: deps.fetch,
      endpoint: row.server.tokenEndpoint,
      client: row.client,
      params: { grant_type: 'refresh_token', refresh_token: row.refreshToken!, resource: row.resource },
    });
  } catch (err) {
    if (!(err instanceof TokenEndpointError)) throw err;
    return settleRefused(deps, sessionId, upstream, row, err, counted);
  }
  const refreshed: UpstreamToken = {
    ...row,
    accessToken: response.accessToken,
    // RFC 6749 §6: a server that issues no new refresh token leaves the old one valid.
    refreshToken: response.refreshToken ?? row.refreshToken,
    expiresAt: response.expiresIn === undefined ? undefined : deps.now() + response.expiresIn * 1000,
    scopes: response.scopes ?? row.scopes,
    obtainedAt: deps.now(),
  };
  // The server may have retired the old refresh token already: the new one exists only here until
  // saved, so a store hiccup is retried rather than answered (the next refresh would be a replay).
  const saved = await retryOnOutage(() => saveRefreshed(deps, sessionId, refreshed, version));
  counted.outcome = 'success';
  return saved;
}

/**
 * A refresh the token endpoint did not grant: an outage keeps the row (503); a refusal returns the
 * successor another replica stored meanwhile, else drops the row (and a registration the server
 * forgot) and throws RefreshRejectedError.
 */
async function settleRefused(
  deps: RefreshDeps,
  sessionId: string,
  upstream: string,
  row: UpstreamToken,
  err: TokenEndpointError,
  counted: { outcome: RefreshOutcome },
): Promise<UpstreamToken> {
  if (err.kind === 'unavailable') {
    counted.outcome = 'unavailable';
    throw new ServiceUnavailable(`the authorization server of upstream "${upstream}" is unavailable; retry shortly`, {
      headers: { 'retry-after': '5' },
      cause: err,
    });
  }
  // Another replica may have refreshed (and rotated) first, e.g. after outliving its lock: its successor is in the store.
  const latest = await deps.stores.tokens.read(sessionId, upstream);
  if (latest && latest.token.refreshToken !== row.refreshToken) {
    counted.outcome = 'superseded';
    return latest.token;
  }
  // Only the row holding the refused refresh token goes: never one written meanwhile (compare-and-delete).
  if (latest) await deps.stores.tokens.takeIf(sessionId, upstream, latest.version);
  await forgetUnknownClient(deps.registration, row.server.issuer, row.client, err);
  counted.outcome = 'rejected';
  throw new RefreshRejectedError(`the authorization server of upstream "${upstream}" refused the refresh token (${err.oauthError ?? 'rejected'})`, { cause: err });
}

/** Replaces the row the refresh started from (compare-and-set), or settles what replaced it. */
async function saveRefreshed(deps: RefreshDeps, sessionId: string, refreshed: UpstreamToken, version: string): Promise<UpstreamToken> {
  if (await deps.stores.tokens.replace(sessionId, refreshed, version)) return refreshed;
  const latest = await deps.stores.tokens.read(sessionId, refreshed.upstream);
  // An earlier attempt that timed out may have been written after all.
  if (latest?.token.accessToken === refreshed.accessToken) return latest.token;
  if (!latest) {
    // Disconnected or logged out during the refresh: the new grant must not outlive that.
    await revokeGrant(deps, refreshed).catch(() => false);
    throw new RefreshRejectedError(`the connection to upstream "${refreshed.upstream}" was removed during the refresh`);
  }
  // A newer row (a new connection, a step-up) is kept; it is at least as good as ours.
  return latest.token;
}
