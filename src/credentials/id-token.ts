/**
 * Mode `id_token` (same-IdP SSO): the upstream gets the IdP's ID token of the
 * caller's session as `Authorization: Bearer`. An ID token about to expire is renewed with the
 * session's IdP refresh token (IdPs return a new ID token on refresh, OIDC Core §12.2); when none
 * comes back, the agent is asked to sign in again.
 */
import { unauthorized, type ChallengeOptions } from '../authserver/tokens/challenge.ts';
import type { IdpTokens } from '../authserver/records/records.ts';
import { answerSessionTokenRejection, idpFailure, type IdpSessionTokens } from './idp-session.ts';
import { requirePrincipal } from './idp.ts';
import type { CredentialRequest, CredentialSource } from './types.ts';

/** Options of {@link createIdTokenCredential}. */
export interface IdTokenCredentialOptions {
  upstream: { name: string; resource: string; scopes: readonly string[] };
  session: IdpSessionTokens;
  /** Renew this long before the ID token's `exp`, ms. Default 60 000. */
  refreshMarginMs?: number;
  endSession(sessionId: string): Promise<void>;
}

/** Creates the `id_token` credential source of one upstream. */
export function createIdTokenCredential(options: IdTokenCredentialOptions): CredentialSource {
  const { session } = options;
  const margin = options.refreshMarginMs ?? 60_000;
  const challenge: ChallengeOptions = { resource: options.upstream.resource, scopes: options.upstream.scopes };
  const sent = new WeakMap<CredentialRequest, string>();
  const expiring = (tokens: IdpTokens) => {
    const exp = tokens.idToken === undefined ? undefined : idTokenExpiry(tokens.idToken);
    return exp !== undefined && exp - margin <= session.now();
  };

  async function idToken(request: CredentialRequest, stale: (tokens: IdpTokens) => boolean): Promise<string> {
    const principal = requirePrincipal(request, challenge);
    let tokens: IdpTokens;
    try {
      tokens = await session.current(principal.sessionId, stale);
    } catch (error) {
      throw idpFailure(error, challenge);
    }
    if (!tokens.idToken || expiring(tokens)) {
      await options.endSession(principal.sessionId);
      throw unauthorized({ ...challenge, tokenSent: true, description: 'the sign-in has no current ID token; sign in again' });
    }
    return tokens.idToken;
  }

  return {
    mode: 'id_token',
    async headers(request) {
      const token = await idToken(request, expiring);
      sent.set(request, token);
      return { authorization: `Bearer ${token}` };
    },
    async rejected(request, rejection, attempt) {
      requirePrincipal(request, challenge);
      const rejectedToken = sent.get(request);
      return answerSessionTokenRejection({
        upstream: options.upstream.name,
        challenge,
        status: rejection.status,
        attempt,
        renew: () => idToken(request, (tokens) => tokens.idToken === rejectedToken || expiring(tokens)),
      });
    },
  };
}

/** `exp` of a stored ID token in epoch ms (it was validated at login; this only reads it). */
export function idTokenExpiry(idToken: string): number | undefined {
  try {
    // The payload as jose's decodeJwt reads it, without loading jose in every gateway for it.
    const payload = idToken.split('.')[1];
    if (payload === undefined) return undefined;
    const { exp } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof exp === 'number' ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
