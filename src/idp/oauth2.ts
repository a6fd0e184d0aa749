/**
 * The company IdP over plain OAuth 2.0 (RFC 6749), for IdPs that are not OpenID Connect
 * providers: GitHub (github.com and Enterprise Server), Bitbucket, in-house servers. There is no
 * discovery and no ID token: the endpoints come from the configuration and the user is read from
 * a user-info API (`GET` with the access token as `Bearer`), at the configured `userClaim` path.
 *
 * The flow keeps the same guarantees as the OIDC client: authorization code with PKCE (S256,
 * RFC 7636) and `state` always; the code is exchanged with the verifier; failures become
 * `IdpError`, `rejected` when the IdP said no (4xx, an OAuth error) and `unavailable` when it
 * could not answer (5xx, network, timeout), so an outage is never mistaken for a logout.
 *
 * Tokens that never expire (GitHub OAuth apps without expiring user tokens: no `expires_in`, no
 * refresh token) are kept without an expiry; nothing refreshes them. When an upstream refuses
 * one, `checkAccess` asks the user-info API whether the IdP still accepts it.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IdpTokens } from '../authserver/records/records.ts';
import type { OAuth2IdpConfig } from '../config/schema.ts';
import { createGuardedFetch, FetchRefusedError, type GuardedRequest, type GuardedResponse } from '../net/guarded-fetch.ts';
import { requestToken, revokeToken, TokenEndpointError, type TokenFetch, type TokenResponse } from '../upstream-oauth/token-endpoint.ts';
import type { UpstreamClient } from '../upstream-oauth/records.ts';
import { IdpError, type IdpClient, type IdpLoginResult, type IdpLoginStart } from './types.ts';

/** Options of {@link createOAuth2IdpClient}; checked when it is called. */
export interface OAuth2IdpClientOptions {
  /** The `idp:` section of the configuration (`kind: oauth2`). */
  config: OAuth2IdpConfig;
  /** Our callback, `{issuer}/oauth/callback`; must be registered at the IdP. */
  redirectUri: string;
  /** Allows `http:` endpoints (dev mode only; the config schema refuses them otherwise). */
  devMode: boolean;
  /**
   * Fetcher of every request to the IdP. Default: a size- and time-limited fetcher (64 KiB,
   * {@link OAuth2IdpClientOptions.timeoutMs}) that may reach internal addresses (the IdP is the
   * operator's choice, often in the same network), never follows a POST's redirect and drops
   * the access token on a redirect to another origin.
   */
  fetch?: TokenFetch;
  /** Time limit of each request to the IdP, in milliseconds. Default 10000. */
  timeoutMs?: number;
  /** The clock, epoch milliseconds (access-token expiry). Default `Date.now`. */
  now?: () => number;
}

/** Largest token or user-info answer read from the IdP, in bytes. */
const RESPONSE_MAX_BYTES = 64 * 1024;

/**
 * Creates the IdP client.
 * @throws TypeError for an invalid `redirectUri` or endpoint, or an `http:` endpoint outside dev mode.
 */
export function createOAuth2IdpClient(options: OAuth2IdpClientOptions): IdpClient {
  const idp = resolveOAuth2Idp(options);
  const { revocationEndpoint } = idp;
  return {
    startLogin: (state) => startLogin(idp, state),
    finishLogin: (callbackUrl, expected) => finishLogin(idp, callbackUrl, expected),
    refresh: (current) => refresh(idp, current),
    async checkAccess(tokens) {
      await userinfo(idp, tokens.accessToken);
    },
    ...(revocationEndpoint && { revoke: (tokens: IdpTokens) => revoke(idp, revocationEndpoint, tokens) }),
  };
}

/** The checked settings of one client, which the steps below take as their first argument. */
interface OAuth2Idp {
  config: OAuth2IdpConfig;
  redirectUri: string;
  authorizationEndpoint: URL;
  tokenEndpoint: string;
  userinfoEndpoint: string;
  revocationEndpoint: string | undefined;
  /** `config.userClaim` split at its dots. */
  claimPath: string[];
  now: () => number;
  fetch: TokenFetch;
  client: UpstreamClient;
}

/** Checks the options and fills in the defaults. */
function resolveOAuth2Idp(options: OAuth2IdpClientOptions): OAuth2Idp {
  const { config, redirectUri, devMode } = options;
  const endpoint = (name: 'authorizationEndpoint' | 'tokenEndpoint' | 'userinfoEndpoint' | 'revocationEndpoint', value: string) => {
    if (!URL.canParse(value)) throw new TypeError(`idp.${name} must be an absolute URL`);
    const url = new URL(value);
    if (url.protocol !== 'https:' && !(devMode && url.protocol === 'http:')) throw new TypeError(`idp.${name} must be an https URL (http only in devMode)`);
    return url;
  };
  const authorizationEndpoint = endpoint('authorizationEndpoint', config.authorizationEndpoint);
  const tokenEndpoint = endpoint('tokenEndpoint', config.tokenEndpoint).href;
  const userinfoEndpoint = endpoint('userinfoEndpoint', config.userinfoEndpoint).href;
  const revocationEndpoint = config.revocationEndpoint === undefined ? undefined : endpoint('revocationEndpoint', config.revocationEndpoint).href;
  if (!URL.canParse(redirectUri)) throw new TypeError('redirectUri must be an absolute URL');
  const timeoutMs = options.timeoutMs ?? 10_000;
  const fetch = errorsAnsweredWith200(
    options.fetch ?? createGuardedFetch({ allowHttp: devMode, allowPrivate: true, maxBytes: RESPONSE_MAX_BYTES, timeoutMs }),
  );
  const client: UpstreamClient = config.clientSecret
    ? { clientId: config.clientId, clientSecret: config.clientSecret, authMethod: config.tokenEndpointAuthMethod, source: 'preconfigured' }
    : { clientId: config.clientId, authMethod: 'none', source: 'preconfigured' };
  return {
    config,
    redirectUri,
    authorizationEndpoint,
    tokenEndpoint,
    userinfoEndpoint,
    revocationEndpoint,
    claimPath: config.userClaim.split('.'),
    now: options.now ?? Date.now,
    fetch,
    client,
  };
}

/** The authorization request (RFC 6749 §4.1.1) with PKCE (RFC 7636 §4.3). */
async function startLogin(idp: OAuth2Idp, state: string): Promise<IdpLoginStart> {
  const { config } = idp;
  const codeVerifier = randomBytes(32).toString('base64url');
  const url = new URL(idp.authorizationEndpoint);
  // Operator parameters first, so they can never replace the ones the flow's security rests
  // on; a query the endpoint URL already has is kept (RFC 6749 §3.1).
  for (const [name, value] of Object.entries(config.authParams)) url.searchParams.set(name, value);
  const params: Record<string, string> = {
    response_type: 'code',
    client_id: config.clientId,
    redirect_uri: idp.redirectUri,
    state,
    code_challenge: createHash('sha256').update(codeVerifier).digest('base64url'),
    code_challenge_method: 'S256',
  };
  if (config.scopes.length > 0) params.scope = config.scopes.join(' ');
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  // There is no ID token, so no nonce: the state (single use, bound to this browser) and
  // PKCE carry the binding.
  return { url: url.href, codeVerifier, nonce: '' };
}

/** The callback (RFC 6749 §4.1.2): state checked, code exchanged with the verifier, user read from user-info. */
async function finishLogin(idp: OAuth2Idp, callbackUrl: URL, expected: { state: string; codeVerifier: string }): Promise<IdpLoginResult> {
  const params = callbackUrl.searchParams;
  const error = params.get('error');
  if (error !== null) throw new IdpError('rejected', `the identity provider refused the login (${error})`, { oauthError: error });
  const state = Buffer.from(params.get('state') ?? '');
  const wanted = Buffer.from(expected.state);
  if (state.length !== wanted.length || !timingSafeEqual(state, wanted)) throw new IdpError('rejected', 'the callback state does not match');
  const code = params.get('code');
  if (!code) throw new IdpError('rejected', 'the callback has no authorization code');
  const response = await token(
    idp,
    { grant_type: 'authorization_code', code, redirect_uri: idp.redirectUri, code_verifier: expected.codeVerifier },
    'the identity provider did not complete the login',
  );
  const tokens = toTokens(idp, response);
  const info = await userinfo(idp, tokens.accessToken);
  return { subject: subjectOf(idp, info), tokens, claims: info };
}

/** The refresh-token grant (RFC 6749 §6). */
async function refresh(idp: OAuth2Idp, current: IdpTokens): Promise<IdpTokens> {
  if (!current.refreshToken) throw new IdpError('rejected', 'no refresh token was issued for this session');
  return toTokens(idp, await token(idp, { grant_type: 'refresh_token', refresh_token: current.refreshToken }, 'the refresh at the identity provider failed'), current);
}

async function revoke(idp: OAuth2Idp, revocationEndpoint: string, tokens: IdpTokens): Promise<void> {
  // RFC 7009 §2.1: revoking the refresh token ends the grant (and, at most servers, its
  // access tokens); a grant without one revokes the access token.
  const [value, hint] = tokens.refreshToken ? [tokens.refreshToken, 'refresh_token' as const] : [tokens.accessToken, 'access_token' as const];
  await revokeToken({ fetch: idp.fetch, endpoint: revocationEndpoint, client: idp.client, token: value, tokenTypeHint: hint });
}

function toTokens(idp: OAuth2Idp, response: TokenResponse, carried?: IdpTokens): IdpTokens {
  return {
    accessToken: response.accessToken,
    // OAuth 2.1 §4.3.3: a refresh response may omit the refresh token; the old one stays valid.
    refreshToken: response.refreshToken ?? carried?.refreshToken,
    // No expires_in: the token does not expire (GitHub without expiring user tokens), or the
    // IdP did not say; either way nothing can be done before it is refused.
    expiresAt: response.expiresIn === undefined ? undefined : idp.now() + response.expiresIn * 1000,
    scope: response.scopes?.join(' ') ?? carried?.scope,
    tokenType: 'Bearer',
  };
}

/** One token request; its failures become `IdpError`, prefixed with `message`. */
async function token(idp: OAuth2Idp, params: Record<string, string>, message: string): Promise<TokenResponse> {
  try {
    return await requestToken({ fetch: idp.fetch, endpoint: idp.tokenEndpoint, client: idp.client, params });
  } catch (error) {
    if (error instanceof TokenEndpointError) {
      const detail = error.oauthError ? ` (${error.oauthError})` : '';
      throw new IdpError(error.kind, `${message}${detail}`, { oauthError: error.oauthError, cause: error });
    }
    throw new IdpError('unavailable', `${message} (identity provider unreachable)`, { cause: error });
  }
}

/** The user-info JSON for an access token; 401/403 means the IdP does not accept the token. */
async function userinfo(idp: OAuth2Idp, accessToken: string): Promise<Record<string, unknown>> {
  let res: GuardedResponse;
  try {
    // GitHub's API refuses requests without a User-Agent and answers JSON when asked for it.
    res = await idp.fetch(idp.userinfoEndpoint, { headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json', 'user-agent': 'mcpgate' } });
  } catch (error) {
    const reason = error instanceof FetchRefusedError ? error.reason : 'request failed';
    throw new IdpError('unavailable', `the user-info API of the identity provider did not answer (${reason})`, { cause: error });
  }
  if (res.status >= 500) throw new IdpError('unavailable', `the user-info API of the identity provider answered ${res.status}`);
  if (res.status !== 200) throw new IdpError('rejected', `the user-info API of the identity provider refused the access token (HTTP ${res.status})`);
  let body: unknown;
  try {
    body = res.json();
  } catch (error) {
    throw new IdpError('rejected', 'the user-info API of the identity provider answered something that is not JSON', { cause: error });
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new IdpError('rejected', 'the user-info API of the identity provider answered something that is not a JSON object');
  }
  return body as Record<string, unknown>;
}

function subjectOf(idp: OAuth2Idp, info: Record<string, unknown>): string {
  const value = readPath(info, idp.claimPath);
  // A number is a stable id (GitHub's `id`); anything else (an object, a boolean) names nobody.
  const usable = (typeof value === 'string' && value !== '') || (typeof value === 'number' && Number.isSafeInteger(value));
  if (!usable) throw new IdpError('rejected', `the user-info answer has no usable "${idp.config.userClaim}"`);
  // An address the IdP says it has not verified could be anybody's (account takeover by e-mail).
  if (idp.claimPath.at(-1) === 'email' && 'email_verified' in info && info.email_verified !== true) {
    throw new IdpError('rejected', 'the user-info e-mail address is not verified');
  }
  return String(value);
}

/** The value at a dotted path of the user-info JSON; only own members are followed (no `__proto__`, no `constructor`). */
function readPath(value: unknown, path: readonly string[]): unknown {
  let at = value;
  for (const name of path) {
    if (typeof at !== 'object' || at === null || Array.isArray(at) || !Object.hasOwn(at, name)) return undefined;
    at = (at as Record<string, unknown>)[name];
  }
  return at;
}

/**
 * GitHub's token endpoint answers an OAuth error (`bad_verification_code`, `bad_refresh_token`)
 * with status 200 and an `error` member; RFC 6749 §5.2 says 400. Such an answer is given the
 * status it should have had, so it is classified as the refusal it is, not as an invalid token
 * response (an outage).
 */
function errorsAnsweredWith200(fetch: TokenFetch): TokenFetch {
  return async (url: string, init?: GuardedRequest) => {
    const res = await fetch(url, init);
    if (res.status !== 200 || init?.method !== 'POST') return res;
    let body: unknown;
    try {
      body = res.json();
    } catch {
      return res;
    }
    const isError = typeof body === 'object' && body !== null && typeof (body as { error?: unknown }).error === 'string';
    return isError ? { ...res, status: 400 } : res;
  };
}
