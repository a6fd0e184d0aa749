/**
 * Mode `token_exchange` (RFC 8693): the session's company-IdP access token is
 * exchanged at a configured token endpoint for a token the upstream accepts (its `audience`),
 * and that token is sent upstream. The agent's token and the IdP token never reach the upstream.
 *
 * - Cached per (user, endpoint, audience) until shortly before it expires; one exchange in flight
 *   per key (the losers of a race share the winner's result).
 * - The exchange endpoint refusing the subject token (`invalid_request`, `invalid_grant`, other
 *   4xx): the IdP token is refreshed and the exchange tried once more; refused again, the session
 *   ends and the agent is sent to sign in again (401), as mode `idp` does when its refresh is refused.
 * - A refusal that is our configuration's fault (`invalid_client`, `unauthorized_client`,
 *   `unsupported_grant_type`, `invalid_target`, `invalid_scope`): 502, the session is kept —
 *   signing in again would not help.
 * - 5xx, transport errors, unreadable answers: 503 with `Retry-After`; nothing is cached or ended.
 * - The upstream answering 401: the cached token is dropped and the request retried once with a
 *   fresh exchange.
 *
 * The cache is in process memory (bounded). With several replicas each one exchanges once per
 * key; that costs an exchange, never correctness.
 */
import { unauthorized, type ChallengeOptions } from '../authserver/challenge.ts';
import type { IdpTokens } from '../authserver/records.ts';
import { BadGateway, Forbidden, TemporarilyUnavailable } from '../http/errors.ts';
import type { Logger } from '../observability/logger.ts';
import { sessionTag } from '../observability/logger.ts';
import { requestToken, TokenEndpointError, type TokenFetch } from '../upstream-oauth/token-endpoint.ts';
import { idpFailure, type IdpSessionTokens } from './idp-session.ts';
import { requirePrincipal } from './idp.ts';
import { createSingleFlight, type SingleFlight } from './single-flight.ts';
import type { CredentialRequest, CredentialSource, Principal } from './types.ts';

/** RFC 8693 §2.1 and §3. */
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

/** OAuth errors that say our client or its configuration is wrong, not the user's token. */
const CONFIGURATION_ERRORS = new Set(['invalid_client', 'unauthorized_client', 'unsupported_grant_type', 'invalid_target', 'invalid_scope']);

/** Options of {@link createTokenExchangeCredential}; validated when it is called. */
export interface TokenExchangeOptions {
  /** The upstream's name and resource URL, and the scopes our tokens for it carry (for the re-login challenge). */
  upstream: { name: string; resource: string; scopes: readonly string[] };
  /** The `auth:` keys of the upstream. */
  tokenEndpoint: string;
  audience: string;
  /** `scope` of the exchange request; omitted when empty. */
  scopes: readonly string[];
  clientId: string;
  /** With a secret: `client_secret_basic` (RFC 6749 §2.3.1); without: a public client sending `client_id`. */
  clientSecret?: string;
  /** The sessions' IdP tokens (shared with modes `idp` and `id_token`). */
  session: IdpSessionTokens;
  /** Ends a session (`sessions.revoke`) when even a fresh IdP token is refused. */
  endSession(sessionId: string): Promise<void>;
  /** The SSRF-guarded fetcher. */
  fetch: TokenFetch;
  logger: Logger;
  /** Refresh the IdP token this long before it expires, ms. Default 60000. */
  idpRefreshMarginMs?: number;
  /**
   * Exchange again this long before the exchanged token expires, ms. Default 30000, never more
   * than half the token's lifetime (a 20 s token is reused for 10 s).
   */
  expiryMarginMs?: number;
  /** Lifetime assumed when the response has no `expires_in`, ms. Default 300000. */
  defaultLifetimeMs?: number;
  /** Cached tokens kept at most; the oldest is dropped first. Default 10000. */
  maxEntries?: number;
  /** Default in-process; see `single-flight.ts`. */
  singleFlight?: SingleFlight;
}

interface Cached {
  accessToken: string;
  /** When to exchange again (expiry minus margin), epoch ms. */
  renewAt: number;
}

/** Creates the `token_exchange` credential source of one upstream. */
export function createTokenExchangeCredential(options: TokenExchangeOptions): CredentialSource {
  const { session, logger } = options;
  const endpoint = new URL(options.tokenEndpoint);
  if (endpoint.protocol !== 'https:' && endpoint.protocol !== 'http:') throw new TypeError('tokenEndpoint must be an http(s) URL');
  if (!options.audience) throw new TypeError('audience is required');
  if (!options.clientId) throw new TypeError('clientId is required');
  const idpMargin = nonNegative(options.idpRefreshMarginMs ?? 60_000, 'idpRefreshMarginMs');
  const expiryMargin = nonNegative(options.expiryMarginMs ?? 30_000, 'expiryMarginMs');
  const defaultLifetime = nonNegative(options.defaultLifetimeMs ?? 300_000, 'defaultLifetimeMs');
  const maxEntries = options.maxEntries ?? 10_000;
  if (!Number.isSafeInteger(maxEntries) || maxEntries <= 0) throw new TypeError('maxEntries must be a positive integer');
  const singleFlight = options.singleFlight ?? createSingleFlight();
  const challenge: ChallengeOptions = { resource: options.upstream.resource, scopes: options.upstream.scopes };
  const client = options.clientSecret
    ? { clientId: options.clientId, clientSecret: options.clientSecret, authMethod: 'client_secret_basic' as const, source: 'preconfigured' as const }
    : { clientId: options.clientId, authMethod: 'none' as const, source: 'preconfigured' as const };

  const cache = new Map<string, Cached>();
  // The token each request sent, so a 401 drops the cache entry only if it still holds that token.
  const sent = new WeakMap<CredentialRequest, { key: string; token: string }>();
  const keyOf = (principal: Principal) => JSON.stringify([principal.subject, endpoint.href, options.audience]);
  const idpExpiring = (tokens: IdpTokens) => tokens.expiresAt !== undefined && tokens.expiresAt - idpMargin <= session.now();

  function cached(key: string): Cached | undefined {
    const entry = cache.get(key);
    if (entry && entry.renewAt > session.now()) return entry;
    if (entry) cache.delete(key);
    return undefined;
  }

  function remember(key: string, accessToken: string, expiresIn: number | undefined): Cached {
    const lifetime = expiresIn !== undefined ? expiresIn * 1000 : defaultLifetime;
    const entry = { accessToken, renewAt: session.now() + lifetime - Math.min(expiryMargin, lifetime / 2) };
    cache.delete(key);
    cache.set(key, entry);
    while (cache.size > maxEntries) cache.delete(cache.keys().next().value!);
    return entry;
  }

  async function subjectToken(principal: Principal, stale: (tokens: IdpTokens) => boolean): Promise<IdpTokens> {
    try {
      return await session.current(principal.sessionId, stale);
    } catch (error) {
      throw idpFailure(error, challenge);
    }
  }

  /**
   * One RFC 8693 §2.1 request; throws TokenEndpointError. Not tied to one agent's request: callers
   * share it, so one agent going away must not abort it for the others.
   */
  async function exchange(subject: IdpTokens) {
    const params: Record<string, string> = {
      grant_type: TOKEN_EXCHANGE_GRANT,
      subject_token: subject.accessToken,
      subject_token_type: ACCESS_TOKEN_TYPE,
      requested_token_type: ACCESS_TOKEN_TYPE,
      audience: options.audience,
    };
    if (options.scopes.length > 0) params.scope = options.scopes.join(' ');
    return requestToken({ fetch: options.fetch, endpoint: endpoint.href, client, params });
  }

  /** Exchanges for `principal`, refreshing the subject token once when the endpoint refuses it. */
  async function obtain(principal: Principal, key: string): Promise<Cached> {
    // Read again inside the flight: the caller that ran before us may have filled it.
    const hit = cached(key);
    if (hit) return hit;
    let subject = await subjectToken(principal, idpExpiring);
    for (let attempt = 0; ; attempt++) {
      try {
        const token = await exchange(subject);
        logger.info({ msg: 'token exchanged', upstream: options.upstream.name, sid: sessionTag(principal.sessionId) });
        return remember(key, token.accessToken, token.expiresIn);
      } catch (error) {
        if (!(error instanceof TokenEndpointError)) throw error;
        const code = error.oauthError;
        if (error.kind === 'unavailable') {
          logger.warn({ msg: 'token exchange failed; retry later', upstream: options.upstream.name, err: error.message });
          throw new TemporarilyUnavailable(`the token exchange for "${options.upstream.name}" is unavailable; retry shortly`, { headers: { 'retry-after': '5' }, cause: error });
        }
        if (code !== undefined && CONFIGURATION_ERRORS.has(code)) {
          logger.error({ msg: 'token exchange refused: check the upstream configuration', upstream: options.upstream.name, oauthError: code });
          throw new BadGateway(`the token exchange for "${options.upstream.name}" is misconfigured`, { cause: error });
        }
        if (attempt === 0) {
          // The subject token may be revoked or too old for the exchange policy: a fresh one may pass.
          const refused = subject.accessToken;
          subject = await subjectToken(principal, (tokens) => tokens.accessToken === refused || idpExpiring(tokens));
          continue;
        }
        await options.endSession(principal.sessionId);
        logger.warn({ msg: 'token exchange refused the sign-in: session ended', upstream: options.upstream.name, sid: sessionTag(principal.sessionId), oauthError: code });
        throw unauthorized({ ...challenge, tokenSent: true, description: 'the token exchange refused the sign-in; sign in again' });
      }
    }
  }

  return {
    mode: 'token_exchange',
    async headers(request) {
      const principal = requirePrincipal(request, challenge);
      const key = keyOf(principal);
      const entry = cached(key) ?? (await singleFlight(key, () => obtain(principal, key)));
      sent.set(request, { key, token: entry.accessToken });
      return { authorization: `Bearer ${entry.accessToken}` };
    },
    async rejected(request, rejection, attempt) {
      requirePrincipal(request, challenge);
      if (rejection.status === 403) {
        // Step-up cannot help: the exchange asks for the configured scopes only.
        return { action: 'respond', error: new Forbidden(`upstream "${options.upstream.name}" needs a scope the token exchange does not grant`) };
      }
      if (attempt > 0) return { action: 'respond', error: new BadGateway(`upstream "${options.upstream.name}" refused a freshly exchanged token`) };
      const used = sent.get(request);
      if (used && cache.get(used.key)?.accessToken === used.token) cache.delete(used.key);
      return { action: 'retry' };
    },
  };
}

function nonNegative(value: number, name: string): number {
  if (!Number.isFinite(value) || value < 0) throw new TypeError(`${name} must be a non-negative number of milliseconds`);
  return value;
}
