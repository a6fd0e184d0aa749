/**
 * The `refresh_token` grant (RFC 6749 §6) with rotation and reuse detection (OAuth 2.1 §4.3.1).
 * A rotated token presented again ends the session (the token family), except the immediately
 * previous token presented again by its client within `reuseGraceMs`: refused, nothing revoked.
 * A refresh also ends a session past its absolute lifetime, and one the company IdP no longer
 * backs (checked once the IdP access token has expired).
 */
import { IdpSessionEnded } from '../../credentials/idp-session.ts';
import { InteractionRequired, InvalidGrant, InvalidRequest, InvalidScope, InvalidTarget, TemporarilyUnavailable } from '../../http/errors.ts';
import { IdpError } from '../../idp/types.ts';
import { sessionTag } from '../../observability/logger.ts';
import type { ClientRecord, RefreshTokenRecord, SessionRecord } from '../records/records.ts';
import type { Grant, GrantDeps } from './grant.ts';
import { newRefreshToken } from './mint.ts';

/** Redeems the refresh token in `params` for `client` (already authenticated); throws an RFC 6749 §5.2 error. */
export async function redeemRefreshToken(deps: GrantDeps, client: ClientRecord, params: Map<string, string>): Promise<Grant> {
  const { stores, logger, endSession, now } = deps;
  const presented = params.get('refresh_token');
  if (!presented) throw new InvalidRequest('refresh_token is required');
  // Looked at before it is rotated: another client presenting it must not spend the owner's token.
  const peeked = await stores.refreshTokens.peek(presented);
  if (!peeked) throw new InvalidGrant('the refresh token is invalid or expired');
  if (peeked.clientId !== client.clientId) throw new InvalidGrant('the refresh token was issued to another client');
  const requestedScopes = narrowScopes(params.get('scope'), peeked);
  const resource = params.get('resource');
  if (resource !== undefined && resource !== peeked.resource) throw new InvalidTarget('resource does not match the refresh token');
  // Before rotation: refused for a step-up, the refresh token stays as it was (step-up.ts says
  // why a token presented again after the first refusal gets another code).
  const refusal = await deps.stepUp?.refuse(peeked.sessionId);
  if (refusal === 'first') throw new InvalidGrant('a new authorization is needed for the scope the resource asked for');
  if (refusal === 'again') throw new InteractionRequired('a new authorization is needed for the scope the resource asked for; authorize again instead of refreshing');
  // Before rotation too: a refused or unanswered check leaves the refresh token unspent. A token
  // already rotated is a reuse, found below; the IdP is not asked on its behalf.
  const live = peeked.rotatedAt === undefined ? await confirmSession(deps, peeked.sessionId) : undefined;

  const successor = newRefreshToken();
  const rotated = await stores.refreshTokens.rotate(presented, successor);
  if (!rotated) throw new InvalidGrant('the refresh token is invalid or expired');
  if (rotated.reused && rotated.successorUnused && now() - (rotated.record.rotatedAt ?? 0) <= deps.reuseGraceMs) {
    // The same client presenting the token it just rotated, whose successor nobody has used
    // yet: one agent's two concurrent refreshes (the other one already got the new pair). A
    // thief gains nothing here either (no tokens are issued), and any later or older reuse
    // still revokes the family.
    logger.info({ msg: 'refresh token presented again within the reuse grace: refused, session kept', sid: sessionTag(rotated.record.sessionId) });
    throw new InvalidGrant('the refresh token was already used; use the refresh token issued in its place');
  }
  if (rotated.reused) {
    // OAuth 2.1 §4.3.1: a rotated token presented again means one of the two holders is an attacker.
    await endSession(rotated.record.sessionId);
    logger.warn({ msg: 'refresh token reused: session revoked', sid: sessionTag(rotated.record.sessionId) });
    throw new InvalidGrant('the refresh token was already used');
  }
  const record = rotated.record;
  // Slides, but never past the session's absolute end.
  const until = Math.min(now() + deps.refreshTokenTtlMs, (live?.createdAt ?? now()) + deps.sessionMaxLifetimeMs);
  const session = await stores.sessions.extend(record.sessionId, until);
  if (!session) throw new InvalidGrant('the session has ended');
  return {
    client,
    subject: record.subject,
    sessionId: record.sessionId,
    resource: record.resource,
    scopes: requestedScopes,
    grantedScopes: record.scopes,
    sessionExpiresAt: session.expiresAt,
    refreshToken: successor,
  };
}

/**
 * The checks a refresh makes on the session itself: its absolute lifetime, then the company
 * IdP's word once the IdP access token has expired. Undefined when the session is gone (the
 * rotation then reports the token as invalid).
 */
async function confirmSession(deps: GrantDeps, sessionId: string): Promise<SessionRecord | undefined> {
  const { stores, logger, endSession, now } = deps;
  const session = await stores.sessions.get(sessionId);
  if (!session) return undefined;
  if (now() >= session.createdAt + deps.sessionMaxLifetimeMs) {
    await endSession(sessionId);
    logger.info({ msg: 'session reached its maximum lifetime: ended', sid: sessionTag(sessionId) });
    throw new InvalidGrant('the session reached its maximum lifetime; sign in again');
  }
  if (!deps.idpSession) return session;
  try {
    // Refreshes the IdP grant only when its access token has expired: a user disabled at the
    // IdP is then refused there (invalid_grant), and `current` ends the session.
    await deps.idpSession.current(sessionId, (tokens) => tokens.expiresAt !== undefined && tokens.expiresAt <= now());
  } catch (error) {
    if (error instanceof IdpSessionEnded) {
      // Already ended when the IdP refused; not when the IdP tokens were simply gone.
      await endSession(sessionId);
      throw new InvalidGrant('the sign-in at the identity provider has ended; sign in again');
    }
    if (error instanceof IdpError) {
      // An outage is never a logout: the session and this refresh token stay for a retry.
      throw new TemporarilyUnavailable('the identity provider cannot confirm the sign-in right now; retry shortly', { headers: { 'retry-after': '5' }, cause: error });
    }
    throw error;
  }
  return session;
}

/** RFC 6749 §6: a refresh may ask for fewer scopes than granted, never more. */
function narrowScopes(scope: string | undefined, record: RefreshTokenRecord): string[] {
  const requested = scope?.split(' ').filter(Boolean) ?? [];
  if (requested.length === 0) return record.scopes;
  const granted = new Set(record.scopes);
  const extra = requested.filter((s) => !granted.has(s));
  if (extra.length > 0) throw new InvalidScope('a refresh cannot add scopes that were not granted');
  return [...new Set(requested)];
}
