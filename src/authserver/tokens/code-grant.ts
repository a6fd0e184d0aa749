/**
 * The `authorization_code` grant (RFC 6749 §4.1.3) with PKCE (RFC 7636 §4.6) and resource
 * binding (RFC 8707 §2.2). A code is spent on its first presentation whatever follows; a code
 * presented again ends the session it was issued to (RFC 6749 §4.1.2).
 */
import { InvalidGrant, InvalidRequest, InvalidTarget } from '../../http/errors.ts';
import { sessionTag } from '../../observability/logger.ts';
import type { ClientRecord } from '../records/records.ts';
import type { Grant, GrantDeps } from './grant.ts';
import { isPkceVerifier, pkceChallenge, safeEqual } from './mint.ts';

/** Redeems the code in `params` for `client` (already authenticated); throws an RFC 6749 §5.2 error. */
export async function redeemCode(deps: GrantDeps, client: ClientRecord, params: Map<string, string>): Promise<Grant> {
  const { stores, logger, endSession } = deps;
  const code = params.get('code');
  const redirectUri = params.get('redirect_uri');
  if (!code) throw new InvalidRequest('code is required');
  if (!redirectUri) throw new InvalidRequest('redirect_uri is required');

  // Consumed before any check: a code that fails a binding is spent too, so a verifier cannot be guessed.
  const consumed = await stores.codes.consume(code);
  if (!consumed) throw new InvalidGrant('the authorization code is invalid or expired');
  if (consumed.reused) {
    // RFC 6749 §4.1.2: a code used twice may have been stolen; everything issued from it dies.
    await endSession(consumed.sessionId);
    logger.warn({ msg: 'authorization code reused: session revoked', sid: sessionTag(consumed.sessionId) });
    throw new InvalidGrant('the authorization code was already used');
  }
  const record = consumed.record;
  const refuse = async (error: Error): Promise<never> => {
    // The session was created for this code alone; it will never get tokens now (a chained
    // authorization may already have connected it upstream, so through the whole path).
    await endSession(record.sessionId);
    throw error;
  };
  if (record.clientId !== client.clientId) return refuse(new InvalidGrant('the authorization code was issued to another client'));
  if (record.redirectUri !== redirectUri) return refuse(new InvalidGrant('redirect_uri does not match the authorization request'));
  const verifier = params.get('code_verifier');
  if (!verifier || !isPkceVerifier(verifier) || !safeEqual(pkceChallenge(verifier), record.codeChallenge)) {
    return refuse(new InvalidGrant('PKCE verification failed'));
  }
  const resource = params.get('resource');
  if (resource !== undefined && resource !== record.resource) {
    return refuse(new InvalidTarget('resource does not match the authorization request'));
  }
  const session = await stores.sessions.get(record.sessionId);
  if (!session) throw new InvalidGrant('the session has ended');
  return {
    client,
    subject: record.subject,
    sessionId: record.sessionId,
    resource: record.resource,
    scopes: record.scopes,
    grantedScopes: record.scopes,
    sessionExpiresAt: session.expiresAt,
  };
}
