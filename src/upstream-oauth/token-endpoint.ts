/**
 * Calls to an upstream authorization server's token (RFC 6749 §3.2) and revocation (RFC 7009)
 * endpoints, through the SSRF-guarded fetcher, with the client authentication our registration
 * got (RFC 6749 §2.3.1: `client_secret_basic` or `client_secret_post`; `none` sends only `client_id`),
 * and what an `invalid_client` answer means for a dynamically registered client.
 */
import { FetchRefusedError, type GuardedRequest, type GuardedResponse } from '../net/guarded-fetch.ts';
import { oauthErrorCode, type ClientRegistration } from './client-registration.ts';
import type { UpstreamClient } from './records.ts';

/**
 * A token endpoint call failed. `rejected`: the server refused the grant (4xx, e.g.
 * `invalid_grant`), so the grant is dead. `unavailable`: 5xx, a transport error or an unreadable
 * answer, so the grant may still be good and must be kept (an outage is never a logout).
 */
export class TokenEndpointError extends Error {
  override name = 'TokenEndpointError';
  readonly kind: 'rejected' | 'unavailable';
  /** The OAuth `error` code, when the server sent one (safe to log). */
  readonly oauthError?: string;
  constructor(kind: TokenEndpointError['kind'], message: string, options: { oauthError?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.kind = kind;
    this.oauthError = options.oauthError;
  }
}

/**
 * `invalid_client` for a dynamically registered client means the server dropped our
 * registration (expired, deleted): the cached one is forgotten so the next flow registers again.
 * True when the error was that.
 */
export async function forgetUnknownClient(
  registration: Pick<ClientRegistration, 'forgetClient'>,
  issuer: string,
  client: UpstreamClient,
  err: TokenEndpointError,
): Promise<boolean> {
  if (err.oauthError !== 'invalid_client' || client.source !== 'dcr') return false;
  await registration.forgetClient({ issuer, clientId: client.clientId });
  return true;
}

/** A successful token response (RFC 6749 §5.1), checked. */
export interface TokenResponse {
  accessToken: string;
  refreshToken?: string;
  /** Seconds; undefined when the server did not say. */
  expiresIn?: number;
  /** Granted scopes, when the server listed them. */
  scopes?: string[];
}

/** The fetcher the token endpoint calls go through. */
export type TokenFetch = (url: string, init?: GuardedRequest) => Promise<GuardedResponse>;

const RESPONSE_MAX_BYTES = 64 * 1024;
const MAX_TOKEN_LENGTH = 16 * 1024;

/**
 * RFC 6749 §2.3.1: client id and secret are form-encoded before they are joined for Basic,
 * so a `:` in a client id survives.
 */
function formEncode(value: string): string {
  return encodeURIComponent(value).replace(/%20/g, '+');
}

function authenticate(client: UpstreamClient, params: URLSearchParams): Record<string, string> {
  switch (client.authMethod) {
    case 'client_secret_basic': {
      const credentials = `${formEncode(client.clientId)}:${formEncode(client.clientSecret ?? '')}`;
      return { authorization: `Basic ${Buffer.from(credentials).toString('base64')}` };
    }
    case 'client_secret_post':
      params.set('client_id', client.clientId);
      params.set('client_secret', client.clientSecret ?? '');
      return {};
    case 'none':
      params.set('client_id', client.clientId);
      return {};
  }
}

async function post(fetch: TokenFetch, endpoint: string, client: UpstreamClient, params: URLSearchParams, signal?: AbortSignal): Promise<GuardedResponse> {
  const headers = {
    'content-type': 'application/x-www-form-urlencoded',
    accept: 'application/json',
    ...authenticate(client, params),
  };
  try {
    return await fetch(endpoint, { method: 'POST', headers, body: params.toString(), maxBytes: RESPONSE_MAX_BYTES, signal });
  } catch (err) {
    if (signal?.aborted) throw err;
    const detail = err instanceof FetchRefusedError ? err.reason : 'request failed';
    throw new TokenEndpointError('unavailable', `request to ${new URL(endpoint).host} failed (${detail})`, { cause: err });
  }
}

/**
 * POSTs a grant to the token endpoint and checks the answer.
 * @throws TokenEndpointError
 */
export async function requestToken(options: {
  fetch: TokenFetch;
  endpoint: string;
  client: UpstreamClient;
  /** `grant_type` and its parameters (`code`, `redirect_uri`, `code_verifier`, `refresh_token`, `resource`, …); pairs for a repeated name. */
  params: Record<string, string> | ReadonlyArray<[string, string]>;
  signal?: AbortSignal;
}): Promise<TokenResponse> {
  const host = new URL(options.endpoint).host;
  const res = await post(options.fetch, options.endpoint, options.client, new URLSearchParams(options.params as Record<string, string> | Array<[string, string]>), options.signal);
  let body: Record<string, unknown> | undefined;
  try {
    const value = res.json();
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) body = value as Record<string, unknown>;
  } catch {
    body = undefined;
  }
  if (res.status >= 400 && res.status < 500) {
    const code = oauthErrorCode(body);
    throw new TokenEndpointError('rejected', `the token endpoint at ${host} refused the grant: ${res.status} ${code}`, { oauthError: code });
  }
  if (res.status !== 200) throw new TokenEndpointError('unavailable', `the token endpoint at ${host} answered ${res.status}`);
  if (!body) throw new TokenEndpointError('unavailable', `the token endpoint at ${host} answered something that is not a JSON object`);
  return checkTokenResponse(body, host);
}

function checkTokenResponse(body: Record<string, unknown>, host: string): TokenResponse {
  const bad = (what: string) => new TokenEndpointError('unavailable', `the token endpoint at ${host} answered an invalid token response: ${what}`);
  const { access_token: accessToken, token_type: tokenType, refresh_token: refreshToken, expires_in: expiresIn, scope } = body;
  if (typeof accessToken !== 'string' || accessToken.length === 0 || accessToken.length > MAX_TOKEN_LENGTH) throw bad('access_token');
  // We send the token as `Authorization: Bearer`; any other type (DPoP, MAC) would need more than that.
  if (typeof tokenType !== 'string' || tokenType.toLowerCase() !== 'bearer') throw bad('token_type is not Bearer');
  if (refreshToken !== undefined && (typeof refreshToken !== 'string' || refreshToken.length === 0 || refreshToken.length > MAX_TOKEN_LENGTH)) {
    throw bad('refresh_token');
  }
  if (expiresIn !== undefined && (typeof expiresIn !== 'number' || !Number.isFinite(expiresIn) || expiresIn < 0)) throw bad('expires_in');
  if (scope !== undefined && typeof scope !== 'string') throw bad('scope');
  return {
    accessToken,
    refreshToken: refreshToken as string | undefined,
    expiresIn: expiresIn as number | undefined,
    scopes: typeof scope === 'string' ? scope.split(' ').filter(Boolean) : undefined,
  };
}

/**
 * RFC 7009 §2.1 revocation of one token. Resolves true when the server confirmed (200; RFC 7009
 * §2.2 answers 200 for unknown tokens too), false otherwise; never throws for the server's answers.
 */
export async function revokeToken(options: {
  fetch: TokenFetch;
  endpoint: string;
  client: UpstreamClient;
  token: string;
  tokenTypeHint: 'access_token' | 'refresh_token';
  signal?: AbortSignal;
}): Promise<boolean> {
  const params = new URLSearchParams({ token: options.token, token_type_hint: options.tokenTypeHint });
  try {
    const res = await post(options.fetch, options.endpoint, options.client, params, options.signal);
    return res.status === 200;
  } catch {
    return false;
  }
}
