/**
 * Mode `idp` (the token swap): the upstream gets the company IdP's access token of
 * the caller's session as `Authorization: Bearer`, never ours. Refreshed `refreshMargin` before it
 * expires; an upstream 401 forces one refresh and one retry, and a second 401 is a 502 for that
 * request (the session stays: the IdP still backs it).
 */
import { unauthorized, type ChallengeOptions } from '../authserver/tokens/challenge.ts';
import type { IdpTokens } from '../authserver/records/records.ts';
import { answerSessionTokenRejection, idpFailure, type IdpSessionTokens } from './idp-session.ts';
import type { CredentialRequest, CredentialSource, Principal } from './types.ts';

/** Options of {@link createIdpCredential}. */
export interface IdpCredentialOptions {
  /** The upstream's name and resource URL, and the scopes its tokens need (for the re-login challenge). */
  upstream: { name: string; resource: string; scopes: readonly string[] };
  session: IdpSessionTokens;
  /** Refresh this long before the IdP access token expires, ms (`auth.refreshMargin`, default 60 s). */
  refreshMarginMs: number;
}

/** Creates the `idp` credential source of one upstream. */
export function createIdpCredential(options: IdpCredentialOptions): CredentialSource {
  const { session, refreshMarginMs } = options;
  const challenge: ChallengeOptions = { resource: options.upstream.resource, scopes: options.upstream.scopes };
  // The token each request sent, so a 401 refreshes only if nobody has replaced that token yet.
  const sent = new WeakMap<CredentialRequest, string>();
  const expiring = (tokens: IdpTokens) => tokens.expiresAt !== undefined && tokens.expiresAt - refreshMarginMs <= session.now();

  async function tokensFor(principal: Principal, stale: (tokens: IdpTokens) => boolean): Promise<IdpTokens> {
    try {
      return await session.current(principal.sessionId, stale);
    } catch (error) {
      throw idpFailure(error, challenge);
    }
  }

  return {
    mode: 'idp',
    // Only reads: a refresh (a call to the IdP) waits until the session is known to be alive.
    prefetch(request) {
      return tokensFor(requirePrincipal(request, challenge), () => false);
    },
    async headers(request) {
      const principal = requirePrincipal(request, challenge);
      const early = request.prefetched ? ((await request.prefetched) as IdpTokens) : undefined;
      const tokens = early && !expiring(early) ? early : await tokensFor(principal, expiring);
      sent.set(request, tokens.accessToken);
      return { authorization: `Bearer ${tokens.accessToken}` };
    },
    async rejected(request, rejection, attempt) {
      const principal = requirePrincipal(request, challenge);
      const rejectedToken = sent.get(request);
      return answerSessionTokenRejection({
        upstream: options.upstream.name,
        challenge,
        status: rejection.status,
        attempt,
        renew: () => tokensFor(principal, (tokens) => tokens.accessToken === rejectedToken || expiring(tokens)),
      });
    },
  };
}

/** The principal the JWT check put on the request; its absence is a wiring bug, answered as "sign in". */
export function requirePrincipal(request: Pick<CredentialRequest, 'principal'>, challenge: ChallengeOptions): Principal {
  if (!request.principal) throw unauthorized({ ...challenge, tokenSent: false });
  return request.principal;
}
