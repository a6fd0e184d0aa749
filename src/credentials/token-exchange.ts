/**
 * Mode `token_exchange` (RFC 8693): one of the session's company-IdP tokens (its access token,
 * or its ID token with `subjectToken: id_token`) is exchanged at a configured token endpoint for a
 * token the upstream accepts (its `audience` and/or `resource`, the `scopes`, plus any
 * `extraParams` the exchange server needs, e.g. Dex's `connector_id`), and that token is sent
 * upstream. The agent's token and the IdP token never reach the upstream.
 *
 * - Cached per (user, endpoint, audience) until shortly before it expires; one exchange in flight
 *   per key (the losers of a race share the winner's result). Counted in
 *   `mcpgate_token_exchanges_total{upstream, outcome}`: `hit` (served from the cache), `miss` (an
 *   exchange was made), `failure` (the exchange failed, for whatever reason).
 * - `expectedIssuer`: when the issued token is a JWT, its `iss` must be that value, or the token
 *   is refused (502, not cached, the session kept). Only the claim is compared, not the
 *   signature (the upstream verifies that): it catches an exchange server of the wrong realm or
 *   tenant, whose host says nothing about the issuer it signs as. An opaque token is not checked.
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
import { decodeJwt } from 'jose';
import { unauthorized, type ChallengeOptions } from '../authserver/tokens/challenge.ts';
import type { IdpTokens } from '../authserver/records/records.ts';
import { BadGateway, Forbidden, TemporarilyUnavailable } from '../http/errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { Counter } from '../observability/metrics.ts';
import { sessionTag } from '../observability/logger.ts';
import { requestToken, TokenEndpointError, type TokenFetch } from '../upstream-oauth/token-endpoint.ts';
import { idTokenExpiry } from './id-token.ts';
import { idpFailure, type IdpSessionTokens } from './idp-session.ts';
import { requirePrincipal } from './idp.ts';
import { createSingleFlight, type SingleFlight } from './single-flight.ts';
import type { CredentialRequest, CredentialSource, Principal } from './types.ts';

/** RFC 8693 §2.1 and §3. */
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';

/** Which of the session's IdP tokens is exchanged (RFC 8693 §3 token type identifiers). */
export type SubjectTokenKind = 'access_token' | 'id_token';

/** Parameters the exchange sets itself; `extraParams` may not replace them. */
const OWN_PARAMS = new Set([
  'grant_type', 'subject_token', 'subject_token_type', 'requested_token_type', 'actor_token', 'actor_token_type',
  'audience', 'resource', 'scope', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type',
]);

/** OAuth errors that say our client or its configuration is wrong, not the user's token. */
const CONFIGURATION_ERRORS = new Set(['invalid_client', 'unauthorized_client', 'unsupported_grant_type', 'invalid_target', 'invalid_scope']);

/** Options of {@link createTokenExchangeCredential}; validated when it is called. */
export interface TokenExchangeOptions {
  /** The upstream's name and resource URL, and the scopes our tokens for it carry (for the re-login challenge). */
  upstream: { name: string; resource: string; scopes: readonly string[] };
  /** The `auth:` keys of the upstream. */
  tokenEndpoint: string;
  /** RFC 8693 §2.1 `audience`; at least one of `audience` and `resource` is required. */
  audience?: string;
  /** RFC 8693 §2.1 `resource`, one parameter per URI. */
  resource?: readonly string[];
  /** `scope` of the exchange request; omitted when empty. */
  scopes: readonly string[];
  /** The session's IdP token sent as `subject_token`. Default `access_token`. */
  subjectToken?: SubjectTokenKind;
  /** Extra form parameters (e.g. Dex's `connector_id`); may not name one the exchange sets itself. */
  extraParams?: Readonly<Record<string, string>>;
  /** When set, an issued JWT's `iss` must equal it (see the module comment). */
  expectedIssuer?: string;
  /** `mcpgate_token_exchanges_total`; default not counted. */
  exchanges?: Counter;
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
  const resource = [...(options.resource ?? [])];
  if (!options.audience && resource.length === 0) throw new TypeError('audience or resource is required');
  if (!options.clientId) throw new TypeError('clientId is required');
  const extraParams = { ...options.extraParams };
  for (const name of Object.keys(extraParams)) if (OWN_PARAMS.has(name)) throw new TypeError(`extraParams: ${name} is set by the exchange itself`);
  const subjectKind: SubjectTokenKind = options.subjectToken ?? 'access_token';
  const exchanges: Counter = options.exchanges ?? { inc: () => undefined };
  const count = (outcome: 'hit' | 'miss' | 'failure') => exchanges.inc({ upstream: options.upstream.name, outcome });
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
  const keyOf = (principal: Principal) => JSON.stringify([principal.subject, endpoint.href, options.audience ?? null, resource]);
  /** The subject token of `tokens`, when the session has one. */
  const subjectOf = (tokens: IdpTokens) => (subjectKind === 'id_token' ? tokens.idToken : tokens.accessToken);
  /** Whether the subject token must be renewed first (a token without an expiry never is: GitHub's, for one). */
  const idpExpiring = (tokens: IdpTokens) => {
    const expiresAt = subjectKind === 'id_token' ? (tokens.idToken === undefined ? undefined : idTokenExpiry(tokens.idToken)) : tokens.expiresAt;
    return expiresAt !== undefined && expiresAt - idpMargin <= session.now();
  };

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

  /** The session's subject token, renewed first when `stale` says so; a session without one signs in again. */
  async function subjectToken(principal: Principal, stale: (tokens: IdpTokens) => boolean): Promise<string> {
    let tokens: IdpTokens;
    try {
      tokens = await session.current(principal.sessionId, stale);
    } catch (error) {
      throw idpFailure(error, challenge);
    }
    const token = subjectOf(tokens);
    if (token === undefined || (subjectKind === 'id_token' && idpExpiring(tokens))) {
      // An IdP that returned no (fresh) ID token on refresh: only a new sign-in brings one.
      await options.endSession(principal.sessionId);
      throw unauthorized({ ...challenge, tokenSent: true, description: `the sign-in has no current ${subjectKind === 'id_token' ? 'ID' : 'access'} token to exchange; sign in again` });
    }
    return token;
  }

  /** `expectedIssuer` against an issued JWT's `iss`; an opaque token passes (see the module comment). */
  function checkIssuer(accessToken: string): void {
    if (options.expectedIssuer === undefined) return;
    let iss: unknown;
    try {
      iss = decodeJwt(accessToken).iss;
    } catch {
      return; // not a JWT: nothing to read the issuer from
    }
    if (iss === options.expectedIssuer) return;
    logger.error({
      msg: 'token exchange returned a token from an unexpected issuer: check the upstream configuration',
      upstream: options.upstream.name,
      expectedIssuer: options.expectedIssuer,
      issuer: typeof iss === 'string' ? iss.slice(0, 200) : null,
    });
    throw new BadGateway(`the token exchange for "${options.upstream.name}" returned a token from an unexpected issuer (expected ${options.expectedIssuer})`);
  }

  /**
   * One RFC 8693 §2.1 request; throws TokenEndpointError. Not tied to one agent's request: callers
   * share it, so one agent going away must not abort it for the others.
   */
  async function exchange(subject: string) {
    const params: Array<[string, string]> = [
      ...Object.entries(extraParams),
      ['grant_type', TOKEN_EXCHANGE_GRANT],
      ['subject_token', subject],
      ['subject_token_type', subjectKind === 'id_token' ? ID_TOKEN_TYPE : ACCESS_TOKEN_TYPE],
      ['requested_token_type', ACCESS_TOKEN_TYPE],
    ];
    if (options.audience) params.push(['audience', options.audience]);
    for (const uri of resource) params.push(['resource', uri]);
    if (options.scopes.length > 0) params.push(['scope', options.scopes.join(' ')]);
    return requestToken({ fetch: options.fetch, endpoint: endpoint.href, client, params });
  }

  /** Exchanges for `principal`, refreshing the subject token once when the endpoint refuses it. */
  async function obtain(principal: Principal, key: string): Promise<Cached> {
    // Read again inside the flight: the caller that ran before us may have filled it.
    const hit = cached(key);
    if (hit) {
      count('hit');
      return hit;
    }
    try {
      const entry = await exchangeFor(principal, key);
      count('miss');
      return entry;
    } catch (error) {
      count('failure');
      throw error;
    }
  }

  async function exchangeFor(principal: Principal, key: string): Promise<Cached> {
    let subject = await subjectToken(principal, idpExpiring);
    for (let attempt = 0; ; attempt++) {
      try {
        const token = await exchange(subject);
        checkIssuer(token.accessToken);
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
          const refused = subject;
          subject = await subjectToken(principal, (tokens) => subjectOf(tokens) === refused || idpExpiring(tokens));
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
      let entry = cached(key);
      if (entry) count('hit');
      else entry = await singleFlight(key, () => obtain(principal, key));
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
