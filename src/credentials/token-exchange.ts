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
import { requestToken, TokenEndpointError, type TokenFetch, type TokenResponse } from '../upstream-oauth/token-endpoint.ts';
import type { UpstreamClient } from '../upstream-oauth/records.ts';
import { createExchangedTokenCache, nonNegative, type CachedExchange, type ExchangedTokenCache } from './exchanged-token-cache.ts';
import { idTokenExpiry } from './id-token.ts';
import { idpFailure, type IdpSessionTokens } from './idp-session.ts';
import { requirePrincipal } from './idp.ts';
import { createSingleFlight, type SingleFlight } from './single-flight.ts';
import type { CredentialRequest, CredentialSource, Principal, RejectionOutcome, UpstreamRejection } from './types.ts';

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

/** Creates the `token_exchange` credential source of one upstream. */
export function createTokenExchangeCredential(options: TokenExchangeOptions): CredentialSource {
  const exchanger = resolveExchanger(options);
  return {
    mode: 'token_exchange',
    headers: (request) => headers(exchanger, request),
    rejected: (request, rejection, attempt) => rejected(exchanger, request, rejection, attempt),
  };
}

/** The checked settings and the state of one upstream's exchange, which the steps below take as their first argument. */
interface Exchanger {
  /** The upstream's name. */
  upstream: string;
  /** The token endpoint, as a URL string. */
  endpoint: string;
  audience: string | undefined;
  resource: string[];
  scopes: readonly string[];
  extraParams: Record<string, string>;
  subjectKind: SubjectTokenKind;
  expectedIssuer: string | undefined;
  client: UpstreamClient;
  /** The re-login challenge of this upstream. */
  challenge: ChallengeOptions;
  /** `idpRefreshMarginMs`. */
  idpMargin: number;
  session: IdpSessionTokens;
  endSession(sessionId: string): Promise<void>;
  fetch: TokenFetch;
  logger: Logger;
  singleFlight: SingleFlight;
  cache: ExchangedTokenCache;
  /** The token each request sent, so a 401 drops the cache entry only if it still holds that token. */
  sent: WeakMap<CredentialRequest, { key: string; token: string }>;
  count(outcome: 'hit' | 'miss' | 'failure'): void;
}

/** Checks the options and fills in the defaults. */
function resolveExchanger(options: TokenExchangeOptions): Exchanger {
  const endpoint = new URL(options.tokenEndpoint);
  if (endpoint.protocol !== 'https:' && endpoint.protocol !== 'http:') throw new TypeError('tokenEndpoint must be an http(s) URL');
  const resource = [...(options.resource ?? [])];
  if (!options.audience && resource.length === 0) throw new TypeError('audience or resource is required');
  if (!options.clientId) throw new TypeError('clientId is required');
  const extraParams = { ...options.extraParams };
  for (const name of Object.keys(extraParams)) if (OWN_PARAMS.has(name)) throw new TypeError(`extraParams: ${name} is set by the exchange itself`);
  const exchanges: Counter = options.exchanges ?? { inc: () => undefined };
  const idpMargin = nonNegative(options.idpRefreshMarginMs ?? 60_000, 'idpRefreshMarginMs');
  const { session } = options;
  const cache = createExchangedTokenCache({
    now: () => session.now(),
    expiryMarginMs: options.expiryMarginMs ?? 30_000,
    defaultLifetimeMs: options.defaultLifetimeMs ?? 300_000,
    maxEntries: options.maxEntries ?? 10_000,
  });
  const client: UpstreamClient = options.clientSecret
    ? { clientId: options.clientId, clientSecret: options.clientSecret, authMethod: 'client_secret_basic', source: 'preconfigured' }
    : { clientId: options.clientId, authMethod: 'none', source: 'preconfigured' };
  return {
    upstream: options.upstream.name,
    endpoint: endpoint.href,
    audience: options.audience,
    resource,
    scopes: options.scopes,
    extraParams,
    subjectKind: options.subjectToken ?? 'access_token',
    expectedIssuer: options.expectedIssuer,
    client,
    challenge: { resource: options.upstream.resource, scopes: options.upstream.scopes },
    idpMargin,
    session,
    endSession: (sessionId) => options.endSession(sessionId),
    fetch: options.fetch,
    logger: options.logger,
    singleFlight: options.singleFlight ?? createSingleFlight(),
    cache,
    sent: new WeakMap(),
    count: (outcome) => exchanges.inc({ upstream: options.upstream.name, outcome }),
  };
}

async function headers(exchanger: Exchanger, request: CredentialRequest): Promise<Record<string, string>> {
  const { cache } = exchanger;
  const principal = requirePrincipal(request, exchanger.challenge);
  const key = keyOf(exchanger, principal);
  let entry = cache.get(key);
  if (entry) exchanger.count('hit');
  else entry = await exchanger.singleFlight(key, () => obtain(exchanger, principal, key));
  exchanger.sent.set(request, { key, token: entry.accessToken });
  return { authorization: `Bearer ${entry.accessToken}` };
}

async function rejected(exchanger: Exchanger, request: CredentialRequest, rejection: UpstreamRejection, attempt: number): Promise<RejectionOutcome> {
  requirePrincipal(request, exchanger.challenge);
  if (rejection.status === 403) {
    // Step-up cannot help: the exchange asks for the configured scopes only.
    return { action: 'respond', error: new Forbidden(`upstream "${exchanger.upstream}" needs a scope the token exchange does not grant`) };
  }
  if (attempt > 0) return { action: 'respond', error: new BadGateway(`upstream "${exchanger.upstream}" refused a freshly exchanged token`) };
  const used = exchanger.sent.get(request);
  if (used) exchanger.cache.dropIf(used.key, used.token);
  return { action: 'retry' };
}

function keyOf(exchanger: Exchanger, principal: Principal): string {
  return JSON.stringify([principal.subject, exchanger.endpoint, exchanger.audience ?? null, exchanger.resource]);
}

/** The subject token of `tokens`, when the session has one. */
function subjectOf(exchanger: Exchanger, tokens: IdpTokens): string | undefined {
  return exchanger.subjectKind === 'id_token' ? tokens.idToken : tokens.accessToken;
}

/** Whether the subject token must be renewed first (a token without an expiry never is: GitHub's, for one). */
function idpExpiring(exchanger: Exchanger, tokens: IdpTokens): boolean {
  const expiresAt = exchanger.subjectKind === 'id_token' ? (tokens.idToken === undefined ? undefined : idTokenExpiry(tokens.idToken)) : tokens.expiresAt;
  return expiresAt !== undefined && expiresAt - exchanger.idpMargin <= exchanger.session.now();
}

/** The session's subject token, renewed first when `stale` says so; a session without one signs in again. */
async function subjectToken(exchanger: Exchanger, principal: Principal, stale: (tokens: IdpTokens) => boolean): Promise<string> {
  const { subjectKind, challenge } = exchanger;
  let tokens: IdpTokens;
  try {
    tokens = await exchanger.session.current(principal.sessionId, stale);
  } catch (error) {
    throw idpFailure(error, challenge);
  }
  const token = subjectOf(exchanger, tokens);
  if (token === undefined || (subjectKind === 'id_token' && idpExpiring(exchanger, tokens))) {
    // An IdP that returned no (fresh) ID token on refresh: only a new sign-in brings one.
    await exchanger.endSession(principal.sessionId);
    throw unauthorized({ ...challenge, tokenSent: true, description: `the sign-in has no current ${subjectKind === 'id_token' ? 'ID' : 'access'} token to exchange; sign in again` });
  }
  return token;
}

/** `expectedIssuer` against an issued JWT's `iss`; an opaque token passes (see the module comment). */
function checkIssuer(exchanger: Exchanger, accessToken: string): void {
  const { expectedIssuer, upstream } = exchanger;
  if (expectedIssuer === undefined) return;
  let iss: unknown;
  try {
    iss = decodeJwt(accessToken).iss;
  } catch {
    return; // not a JWT: nothing to read the issuer from
  }
  if (iss === expectedIssuer) return;
  exchanger.logger.error({
    msg: 'token exchange returned a token from an unexpected issuer: check the upstream configuration',
    upstream,
    expectedIssuer,
    issuer: typeof iss === 'string' ? iss.slice(0, 200) : null,
  });
  throw new BadGateway(`the token exchange for "${upstream}" returned a token from an unexpected issuer (expected ${expectedIssuer})`);
}

/**
 * One RFC 8693 §2.1 request; throws TokenEndpointError. Not tied to one agent's request: callers
 * share it, so one agent going away must not abort it for the others.
 */
async function exchange(exchanger: Exchanger, subject: string): Promise<TokenResponse> {
  const params: Array<[string, string]> = [
    ...Object.entries(exchanger.extraParams),
    ['grant_type', TOKEN_EXCHANGE_GRANT],
    ['subject_token', subject],
    ['subject_token_type', exchanger.subjectKind === 'id_token' ? ID_TOKEN_TYPE : ACCESS_TOKEN_TYPE],
    ['requested_token_type', ACCESS_TOKEN_TYPE],
  ];
  if (exchanger.audience) params.push(['audience', exchanger.audience]);
  for (const uri of exchanger.resource) params.push(['resource', uri]);
  if (exchanger.scopes.length > 0) params.push(['scope', exchanger.scopes.join(' ')]);
  return requestToken({ fetch: exchanger.fetch, endpoint: exchanger.endpoint, client: exchanger.client, params });
}

/** Exchanges for `principal`, refreshing the subject token once when the endpoint refuses it. */
async function obtain(exchanger: Exchanger, principal: Principal, key: string): Promise<CachedExchange> {
  // Read again inside the flight: the caller that ran before us may have filled it.
  const hit = exchanger.cache.get(key);
  if (hit) {
    exchanger.count('hit');
    return hit;
  }
  try {
    const entry = await exchangeFor(exchanger, principal, key);
    exchanger.count('miss');
    return entry;
  } catch (error) {
    exchanger.count('failure');
    throw error;
  }
}

async function exchangeFor(exchanger: Exchanger, principal: Principal, key: string): Promise<CachedExchange> {
  const { logger, upstream } = exchanger;
  const expiring = (tokens: IdpTokens) => idpExpiring(exchanger, tokens);
  let subject = await subjectToken(exchanger, principal, expiring);
  for (let attempt = 0; ; attempt++) {
    try {
      const token = await exchange(exchanger, subject);
      checkIssuer(exchanger, token.accessToken);
      logger.info({ msg: 'token exchanged', upstream, sid: sessionTag(principal.sessionId) });
      return exchanger.cache.remember(key, token.accessToken, token.expiresIn);
    } catch (error) {
      if (!(error instanceof TokenEndpointError)) throw error;
      const code = error.oauthError;
      if (error.kind === 'unavailable') {
        logger.warn({ msg: 'token exchange failed; retry later', upstream, err: error.message });
        throw new TemporarilyUnavailable(`the token exchange for "${upstream}" is unavailable; retry shortly`, { headers: { 'retry-after': '5' }, cause: error });
      }
      if (code !== undefined && CONFIGURATION_ERRORS.has(code)) {
        logger.error({ msg: 'token exchange refused: check the upstream configuration', upstream, oauthError: code });
        throw new BadGateway(`the token exchange for "${upstream}" is misconfigured`, { cause: error });
      }
      if (attempt === 0) {
        // The subject token may be revoked or too old for the exchange policy: a fresh one may pass.
        const refused = subject;
        subject = await subjectToken(exchanger, principal, (tokens) => subjectOf(exchanger, tokens) === refused || expiring(tokens));
        continue;
      }
      await exchanger.endSession(principal.sessionId);
      logger.warn({ msg: 'token exchange refused the sign-in: session ended', upstream, sid: sessionTag(principal.sessionId), oauthError: code });
      throw unauthorized({ ...exchanger.challenge, tokenSent: true, description: 'the token exchange refused the sign-in; sign in again' });
    }
  }
}
