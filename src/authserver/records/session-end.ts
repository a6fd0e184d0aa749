/**
 * Ending a login session (logout, and the indexes of sessions): the one path every "this session is
 * over" takes — `/oauth/logout`, `/oauth/logout/all`, `/oauth/revoke`, a reused code or refresh
 * token, an IdP that refused the session's refresh, an upstream that refused even a fresh token.
 *
 * First the session record and its IdP tokens go (`sessions.revoke`): from then on nothing of the
 * family works. Then the hooks run, in order, for what other parts keep per session — the
 * upstream OAuth tokens, which are forgotten and revoked at their own authorization servers
 * (RFC 7009). A hook that fails is logged and the others still run: the session is already over,
 * and what a hook leaves behind is unreachable without it (every upstream token row is keyed by
 * the ended `sid`) and expires with its TTL.
 *
 * With `revokeIdpTokens` (an IdP with a revocation endpoint), the session's IdP tokens are read
 * first and revoked at the IdP last (RFC 7009), best effort: a token that never expires (GitHub's)
 * would otherwise stay valid at the IdP after the user signed out of mcpgate.
 */
import { describeCause } from '../../http/server.ts';
import type { Logger } from '../../observability/logger.ts';
import { sessionTag } from '../../observability/logger.ts';
import type { AuthStores, IdpTokens } from './records.ts';

/** Runs after a session has ended, with its `sid`. */
export type SessionEndedHook = (sessionId: string) => Promise<unknown>;

/** Ends a session and runs the hooks (see the module comment). Throws only when the session itself could not be revoked. */
export type EndSession = (sessionId: string) => Promise<void>;

/** Options of {@link createSessionEnding}. */
export interface SessionEndingOptions {
  sessions: Pick<AuthStores['sessions'], 'revoke'>;
  /** What else to forget when a session ends, e.g. `upstreamFlows.forgetSession`. Run in order. */
  onSessionEnded: readonly SessionEndedHook[];
  logger: Logger;
  /** Revokes a session's IdP tokens at the IdP (`IdpClient.revoke`); needs `idpTokens`. Default: not revoked there. */
  revokeIdpTokens?: (tokens: IdpTokens) => Promise<void>;
  /** Where the session's IdP tokens are read before the session is revoked. */
  idpTokens?: Pick<AuthStores['idpTokens'], 'get'>;
}

/** Builds the one session-ending path; see the module comment. */
export function createSessionEnding(options: SessionEndingOptions): EndSession {
  const hooks = [...options.onSessionEnded];
  for (const hook of hooks) if (typeof hook !== 'function') throw new TypeError('onSessionEnded: every hook must be a function');
  const { sessions, logger } = options;
  const { revokeIdpTokens, idpTokens } = options;
  if (revokeIdpTokens && !idpTokens) throw new TypeError('revokeIdpTokens needs idpTokens');
  const failed = (sessionId: string, error: unknown) =>
    logger.warn({ msg: 'session ended, but a clean-up step failed', sid: sessionTag(sessionId), failure: describeCause(error) });
  return async (sessionId) => {
    // Read before they are deleted; a failed read only costs the revocation at the IdP.
    const atIdp = revokeIdpTokens ? await idpTokens!.get(sessionId).catch((error: unknown) => void failed(sessionId, error)) : undefined;
    await sessions.revoke(sessionId);
    for (const hook of hooks) {
      try {
        await hook(sessionId);
      } catch (error) {
        failed(sessionId, error);
      }
    }
    if (atIdp && revokeIdpTokens) await revokeIdpTokens(atIdp).catch((error: unknown) => failed(sessionId, error));
  };
}
