import { InvalidToken } from '../http/errors.ts';
import { AuthRequiredError } from '../upstream-oauth/auth-required.ts';
import { RefreshRejectedError, type OAuthUpstream, type StartFlowOptions, type UpstreamFlows } from '../upstream-oauth/flow.ts';
import type { UpstreamToken } from '../upstream-oauth/records.ts';
import { bearerChallenge, parseWwwAuthenticate, type BearerChallenge } from '../upstream-oauth/www-authenticate.ts';
import type { CredentialRequest, CredentialSource, Principal } from './types.ts';

/** Options of {@link createOAuthCredential}. */
export interface OAuthCredentialOptions {
  upstream: OAuthUpstream;
  flows: UpstreamFlows;
  /** Refresh this long before the upstream token expires, in milliseconds (`auth.refreshMargin`, default 60000). */
  refreshMarginMs?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
}

/**
 * Mode `oauth`: the upstream trusts its own authorization server, and each
 * session holds a token from it, obtained through the upstream OAuth flow. The upstream only ever
 * sees that token: never ours, never the company IdP's.
 *
 * - No token yet: the request goes out without any credential. An upstream that serves it
 *   anonymously (many let `initialize` through) answers it; otherwise its 401 names its resource
 *   metadata (RFC 9728 §5.1), the flow starts from there, and `AuthRequiredError` goes to the agent.
 * - Token about to expire (`refreshMarginMs`): refreshed first, one refresh per session in flight;
 *   a refresh token the server refuses ends the connection like having none.
 * - Upstream 401: one refresh and one retry when the token is refreshable, else a new flow.
 * - Upstream 403 `insufficient_scope`: a flow for the granted ∪ requested scopes (step-up, §6.7).
 */
export function createOAuthCredential(options: OAuthCredentialOptions): CredentialSource {
  const { upstream, flows } = options;
  const now = options.now ?? Date.now;
  const margin = options.refreshMarginMs ?? 60_000;
  if (!Number.isSafeInteger(margin) || margin < 0) throw new TypeError('oauth credential: refreshMarginMs must be a non-negative integer');
  // The token each request sent, so a 401 refreshes only if nobody (on any replica) has replaced it yet.
  const sent = new WeakMap<CredentialRequest, string>();
  const expiring = (token: UpstreamToken) => token.expiresAt !== undefined && token.expiresAt - margin <= now();

  function principalOf(request: CredentialRequest): Principal {
    // The config schema requires login for this mode; a request without a principal is a wiring bug or an anonymous caller.
    if (!request.principal) throw new InvalidToken(`upstream "${upstream.name}" needs a signed-in user`);
    return request.principal;
  }

  async function authRequired(request: CredentialRequest, extra: Partial<StartFlowOptions> = {}): Promise<AuthRequiredError> {
    const principal = principalOf(request);
    const required = await flows.startFlow({ principal, upstream, mcpSessionId: request.mcpSessionId, ...extra });
    return new AuthRequiredError(required);
  }

  return {
    mode: 'oauth',

    async headers(request): Promise<Record<string, string>> {
      const principal = principalOf(request);
      let token = await flows.token(principal.sessionId, upstream.name);
      if (!token) return {};
      if (expiring(token)) {
        if (token.refreshToken) {
          try {
            token = await flows.refresh(principal.sessionId, upstream.name, expiring);
          } catch (err) {
            // The grant is dead and its row gone: as with no token, the upstream's 401 starts a new flow.
            if (err instanceof RefreshRejectedError) return {};
            throw err;
          }
        } else if (token.expiresAt !== undefined && token.expiresAt <= now()) {
          return {};
        }
      }
      sent.set(request, token.accessToken);
      return { authorization: `Bearer ${token.accessToken}` };
    },

    async rejected(request, rejection, attempt) {
      const principal = principalOf(request);
      const challenge = upstreamChallenge(rejection.headers['www-authenticate']);
      const token = await flows.token(principal.sessionId, upstream.name);
      const hint = { resourceMetadata: challenge?.resourceMetadata, scope: challenge?.scope };

      if (rejection.status === 403 && challenge?.error === 'insufficient_scope') {
        return { action: 'respond', error: await authRequired(request, { challenge: hint, scopes: token?.scopes ?? [] }) };
      }
      if (attempt === 0 && token?.refreshToken) {
        try {
          const refused = sent.get(request);
          await flows.refresh(principal.sessionId, upstream.name, (row) => row.accessToken === refused || expiring(row));
          return { action: 'retry' };
        } catch (err) {
          if (!(err instanceof RefreshRejectedError)) throw err;
          // The grant is dead: fall through to a new flow.
        }
      }
      return { action: 'respond', error: await authRequired(request, { challenge: hint }) };
    },
  };
}

function upstreamChallenge(header: string | string[] | undefined): BearerChallenge | undefined {
  return bearerChallenge(parseWwwAuthenticate(header));
}
