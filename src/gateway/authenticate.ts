import type { RequestContext } from '../http/router.ts';
import type { Principal } from '../credentials/types.ts';
import type { Upstream } from './upstream.ts';

/**
 * Verifies the agent's access token for an upstream; undefined (no promise) when nobody needs to
 * be authenticated. Throws an HttpError
 * (401 with `WWW-Authenticate`, 403 `insufficient_scope`) to refuse.
 */
export interface Authenticator {
  /**
   * @param alongside called once the token itself is verified and before the session's liveness
   *   is awaited, so the caller can start the store reads that need the principal in the same
   *   round trip (with Valkey: one pipeline instead of one round trip each). Not called when the
   *   request is refused before the liveness check.
   */
  authenticate(ctx: RequestContext, upstream: Upstream, alongside?: (principal: Principal) => void): Promise<Principal | undefined> | undefined;
}

/**
 * The authenticator of a gateway without login (no `idp:` configured): every request passes
 * without a principal, synchronously (undefined: no promise to wait for). Only `none` and
 * `static` upstreams can exist then (the config schema refuses the other modes without `idp:`).
 */
export const openAccess: Authenticator = {
  authenticate: () => undefined,
};
