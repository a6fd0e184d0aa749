/**
 * The company IdP's tokens of one login session, as the `idp` and `id_token` credential sources
 * use them: read from the store, refreshed before they expire with one refresh per session in
 * flight across the fleet, persisted before anyone uses them, and classified when the IdP says no.
 */
import type { AuthStores, IdpTokens } from '../authserver/records/records.ts';
import { unauthorized, type ChallengeOptions } from '../authserver/tokens/challenge.ts';
import { BadGateway, Forbidden, TemporarilyUnavailable } from '../http/errors.ts';
import { IdpError, type IdpClient } from '../idp/types.ts';
import type { Logger } from '../observability/logger.ts';
import type { Counter } from '../observability/metrics.ts';
import { NOOP_TRACER, type Tracer } from '../observability/tracing.ts';
import { sessionTag } from '../observability/logger.ts';
import { retryOnOutage } from '../store/retry.ts';
import { createSingleFlight, type SingleFlight } from './single-flight.ts';
import type { RejectionOutcome } from './types.ts';

/** Options of {@link createIdpSessionTokens}. */
export interface IdpSessionTokensOptions {
  stores: Pick<AuthStores, 'sessions' | 'idpTokens'>;
  idp: IdpClient;
  logger: Logger;
  /**
   * One refresh per session in flight. Default in-process (`createSingleFlight()`); several
   * replicas on one Valkey need `createFleetSingleFlight`, or two of them refresh with the same
   * rotating refresh token and the IdP revokes the grant.
   */
  singleFlight?: SingleFlight;
  /** Clock, epoch ms; default `Date.now`. */
  now?: () => number;
  /**
   * Ends a session the IdP no longer backs, with everything kept for it (`createSessionEnding`:
   * the upstream OAuth grants too). Default: `stores.sessions.revoke` alone.
   */
  endSession?: (sessionId: string) => Promise<void>;
  /**
   * `mcpgate_token_refreshes_total{kind="idp", outcome}`: `success`, `rejected` (the IdP refused:
   * the session ends), `unavailable` (the IdP could not be asked: the tokens are kept). Default: not counted.
   */
  refreshes?: Counter;
  /** With tracing on, each refresh is a span `refresh idp` under the request's credential span. Default off. */
  tracer?: Tracer;
}

/** Access to the sessions' IdP tokens; shared by every upstream of the gateway so the single flight spans them. */
export interface IdpSessionTokens {
  /**
   * The session's IdP tokens; refreshed first when `stale(tokens)` says so (checked again inside
   * the single flight, so a refresh another caller finished is reused instead of repeated).
   * @throws IdpSessionEnded when the session is gone or the IdP refused the refresh (the session is then revoked).
   * @throws IdpError (`unavailable`) when the IdP could not be asked; the tokens are kept.
   */
  current(sessionId: string, stale: (tokens: IdpTokens) => boolean): Promise<IdpTokens>;
  /** Clock used for expiry decisions, epoch ms. */
  now(): number;
}

/** The session cannot supply IdP tokens any more: the user must sign in again. */
export class IdpSessionEnded extends Error {
  override name = 'IdpSessionEnded';
}

/** Creates the shared IdP-token access for all `idp`/`id_token` upstreams. */
export function createIdpSessionTokens(options: IdpSessionTokensOptions): IdpSessionTokens {
  const { stores } = options;
  const sessionTokens: SessionTokens = {
    stores,
    idp: options.idp,
    logger: options.logger,
    now: options.now ?? Date.now,
    refreshes: options.refreshes ?? { inc: () => undefined },
    revoke: options.endSession ?? ((sessionId: string) => stores.sessions.revoke(sessionId)),
  };
  const singleFlight = options.singleFlight ?? createSingleFlight();
  const tracer = options.tracer ?? NOOP_TRACER;
  return {
    async current(sessionId, stale) {
      const tokens = await load(sessionTokens, sessionId);
      if (!stale(tokens)) return tokens;
      return singleFlight(`refresh:idp:${sessionId}`, () => tracer.trace('refresh idp', () => refresh(sessionTokens, sessionId, stale)));
    },
    now: sessionTokens.now,
  };
}

/** What the steps below need, with the defaults filled in. */
interface SessionTokens {
  stores: IdpSessionTokensOptions['stores'];
  idp: IdpClient;
  logger: Logger;
  now: () => number;
  refreshes: Counter;
  /** Ends a session (see {@link IdpSessionTokensOptions.endSession}). */
  revoke: (sessionId: string) => Promise<void>;
}

async function load({ stores }: SessionTokens, sessionId: string): Promise<IdpTokens> {
  const tokens = await stores.idpTokens.get(sessionId);
  if (!tokens) throw new IdpSessionEnded('the session has no IdP tokens (ended or expired)');
  return tokens;
}

async function endSession({ revoke, logger }: SessionTokens, sessionId: string, why: string): Promise<never> {
  await revoke(sessionId);
  logger.warn({ msg: 'upstream session ended: sign-in required', sid: sessionTag(sessionId), why });
  throw new IdpSessionEnded(why);
}

/** Runs inside the session's single flight: refreshes the tokens if `stale` still says so, and persists them. */
async function refresh(context: SessionTokens, sessionId: string, stale: (tokens: IdpTokens) => boolean): Promise<IdpTokens> {
  const { stores, idp, logger, now, refreshes } = context;
  // Read again inside the flight: the tokens may have been refreshed since the caller looked.
  const current = await load(context, sessionId);
  if (!stale(current)) return current;
  if (!current.refreshToken) return checkUnrefreshable(context, sessionId, current);
  let next: IdpTokens;
  try {
    next = await idp.refresh(current);
    refreshes.inc({ kind: 'idp', outcome: 'success' });
  } catch (error) {
    refreshes.inc({ kind: 'idp', outcome: error instanceof IdpError ? error.kind : 'error' });
    if (error instanceof IdpError && error.kind === 'rejected') {
      // A refresh on another replica that outlived its lock may have rotated the token first:
      // its successor is in the store, and the session is alive.
      const latest = await stores.idpTokens.get(sessionId);
      if (latest && latest.refreshToken !== current.refreshToken) return latest;
      // invalid_grant and other 4xx: the grant is dead at the IdP; only a new login helps.
      return endSession(context, sessionId, `the IdP refused the refresh${error.oauthError ? ` (${error.oauthError})` : ''}`);
    }
    // 5xx and transport errors: an outage is never a logout; the tokens stay.
    logger.warn({ msg: 'IdP refresh failed; tokens kept', sid: sessionTag(sessionId), err: error instanceof Error ? error.message : 'unknown' });
    throw error;
  }
  const merged: IdpTokens = {
    ...next,
    // OAuth 2.1 §4.3.3: a refresh response may omit the refresh token; the old one stays valid.
    refreshToken: next.refreshToken ?? current.refreshToken,
    idToken: next.idToken ?? current.idToken,
  };
  const session = await stores.sessions.get(sessionId);
  if (!session) throw new IdpSessionEnded('the session ended during the refresh');
  // Persisted before anyone uses them: the IdP may already have retired the old refresh token, so
  // the new one exists only here; a store hiccup is retried (the next refresh would be a replay).
  await retryOnOutage(() => stores.idpTokens.put(sessionId, merged, Math.max(1, Math.ceil(session.expiresAt - now()))));
  logger.info({ msg: 'IdP tokens refreshed', sid: sessionTag(sessionId) });
  return merged;
}

/** Stale tokens without a refresh token: handed back while the IdP still accepts them, else the session ends. */
async function checkUnrefreshable(context: SessionTokens, sessionId: string, current: IdpTokens): Promise<IdpTokens> {
  const { idp, logger, now } = context;
  // A token that cannot be refreshed and has not expired (a plain OAuth 2.0 IdP's token that
  // never expires, e.g. GitHub's) was refused by an upstream. Only the IdP can tell a revoked
  // token from an upstream that refuses a good one; the latter must not log the user out of
  // every upstream, so the same token is handed back (the caller's retry then answers 502).
  if (idp.checkAccess && (current.expiresAt === undefined || current.expiresAt > now())) {
    try {
      await idp.checkAccess(current);
    } catch (error) {
      if (error instanceof IdpError && error.kind === 'rejected') return endSession(context, sessionId, 'the IdP no longer accepts the access token (revoked)');
      logger.warn({ msg: 'IdP token check failed; tokens kept', sid: sessionTag(sessionId), err: error instanceof Error ? error.message : 'unknown' });
      throw error;
    }
    return current;
  }
  return endSession(context, sessionId, 'the IdP access token expired and there is no refresh token');
}

/**
 * Turns what `current` throws into the agent's answer for one upstream: 401 `invalid_token` with
 * this resource's challenge (sign in again), or 503 with `Retry-After` while the IdP is down.
 */
export function idpFailure(error: unknown, challenge: ChallengeOptions): unknown {
  if (error instanceof IdpSessionEnded) {
    return unauthorized({ ...challenge, tokenSent: true, description: 'the sign-in at the identity provider has ended; sign in again' });
  }
  if (error instanceof IdpError) {
    return new TemporarilyUnavailable('the identity provider is unavailable; retry shortly', { headers: { 'retry-after': '5' }, cause: error });
  }
  return error;
}

/**
 * How a credential made of the session's IdP tokens (modes `idp`, `id_token`) answers an upstream
 * 401/403: a 403 cannot be helped by a step-up (the IdP token's scopes were fixed at login); the
 * first 401 renews the token unless another request already did, then retries once (a renewal the
 * IdP refuses ends the session: `current` throws and the agent signs in again). A second 401 means
 * the upstream refuses a token the IdP still backs: a 502 for this request, and the session and
 * every other upstream grant stay. Ending the session there would let one misconfigured or hostile
 * upstream log the user out of every upstream and revoke their grants.
 */
export async function answerSessionTokenRejection(options: {
  upstream: string;
  challenge: ChallengeOptions;
  status: number;
  attempt: number;
  /** Renews the token the upstream refused (a no-op when it was already replaced). */
  renew(): Promise<unknown>;
}): Promise<RejectionOutcome> {
  if (options.status === 403) {
    return { action: 'respond', error: new Forbidden(`upstream "${options.upstream}" needs a scope the sign-in did not grant`) };
  }
  if (options.attempt === 0) {
    await options.renew();
    return { action: 'retry' };
  }
  return {
    action: 'respond',
    error: new BadGateway(`upstream "${options.upstream}" refused the identity provider's token even after a refresh; your sign-in is kept, ask the operator to check the upstream`),
  };
}
