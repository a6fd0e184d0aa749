/**
 * The browser's trip to an upstream's authorization server and back: the authorization URL of a
 * flow (RFC 6749 §4.1.1 with PKCE S256 and the RFC 8707 `resource`), then the callback's RFC 9207
 * `iss` check and the code exchange, whose token is stored for (session, upstream).
 */
import { createHash } from 'node:crypto';
import type { Counter } from '../observability/metrics.ts';
import type { ClientRegistration } from './client-registration.ts';
import type { UpstreamFlow, UpstreamToken } from './records.ts';
import type { UpstreamStores } from './stores.ts';
import { forgetUnknownClient, requestToken, TokenEndpointError, type TokenFetch, type TokenResponse } from './token-endpoint.ts';

/** Why an authorization response could not be turned into a token. Shown on the callback's error page. */
export type FlowFailure = 'access_denied' | 'authorization_error' | 'iss_mismatch' | 'iss_missing' | 'invalid_response' | 'exchange_failed';

/** Thrown by `complete`; `message` is safe to show (no code, no token, no upstream free text). */
export class FlowError extends Error {
  override name = 'FlowError';
  readonly failure: FlowFailure;
  constructor(failure: FlowFailure, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.failure = failure;
  }
}

/** What the code exchange needs; `createUpstreamFlows` builds it once, from its validated options. */
export interface ExchangeDeps {
  stores: Pick<UpstreamStores, 'tokens'>;
  /** Our redirect URI, and the registration to forget when the server no longer knows it. */
  registration: Pick<ClientRegistration, 'redirectUri' | 'forgetClient'>;
  /** The SSRF-guarded fetcher, for the token endpoint. */
  fetch: TokenFetch;
  /** The clock, epoch milliseconds. */
  now: () => number;
  /** `mcpgate_auth_flows_total{upstream, outcome}`: `completed`, `failed`. */
  authFlows: Counter;
}

/** The URL of the upstream server's authorization endpoint for this flow (RFC 6749 §4.1.1, PKCE S256, RFC 8707). */
export function authorizationUrl(deps: Pick<ExchangeDeps, 'registration'>, flow: UpstreamFlow): string {
  const url = new URL(flow.server.authorizationEndpoint);
  const params = url.searchParams;
  params.set('response_type', 'code');
  params.set('client_id', flow.client.clientId);
  params.set('redirect_uri', deps.registration.redirectUri);
  params.set('state', flow.state);
  params.set('code_challenge', createHash('sha256').update(flow.codeVerifier).digest('base64url'));
  params.set('code_challenge_method', 'S256');
  if (flow.scopes.length > 0) params.set('scope', flow.scopes.join(' '));
  params.set('resource', flow.resource);
  return url.href;
}

/**
 * Turns the callback's parameters into a stored token and counts the flow completed or failed.
 * Call after the state was taken.
 * @throws FlowError
 */
export async function completeFlow(deps: ExchangeDeps, flow: UpstreamFlow, params: URLSearchParams, abort: AbortSignal | undefined): Promise<UpstreamToken> {
  try {
    const token = await exchangeCode(deps, flow, params, abort);
    deps.authFlows.inc({ upstream: flow.upstream, outcome: 'completed' });
    return token;
  } catch (err) {
    deps.authFlows.inc({ upstream: flow.upstream, outcome: 'failed' });
    throw err;
  }
}

/** The callback's checks, the code exchange and the stored token, uncounted. */
async function exchangeCode(deps: ExchangeDeps, flow: UpstreamFlow, params: URLSearchParams, abort: AbortSignal | undefined): Promise<UpstreamToken> {
  const code = codeOf(flow, params);
  const response = await redeemCode(deps, flow, code, abort);
  const token: UpstreamToken = {
    upstream: flow.upstream,
    resource: flow.resource,
    server: flow.server,
    client: flow.client,
    scopes: response.scopes ?? flow.scopes,
    accessToken: response.accessToken,
    refreshToken: response.refreshToken,
    expiresAt: response.expiresIn === undefined ? undefined : deps.now() + response.expiresIn * 1000,
    obtainedAt: deps.now(),
  };
  await deps.stores.tokens.put(flow.sessionId, token);
  return token;
}

/**
 * The code of an authorization response from the server the flow started with (RFC 9207), or the
 * failure it reports instead.
 * @throws FlowError
 */
function codeOf(flow: UpstreamFlow, params: URLSearchParams): string {
  const iss = params.get('iss');
  // RFC 9207 §2.4: an `iss` that differs means the response came from another server (mix-up).
  if (iss !== null && iss !== flow.server.issuer) {
    throw new FlowError('iss_mismatch', 'the authorization response came from a different authorization server than the one this flow was started with');
  }
  if (iss === null && flow.server.issParameterSupported) {
    throw new FlowError('iss_missing', 'the authorization server promises an "iss" parameter in its responses, and this response has none');
  }
  const error = params.get('error');
  if (error !== null) {
    if (error === 'access_denied') throw new FlowError('access_denied', `access to "${flow.upstream}" was not granted`);
    throw new FlowError('authorization_error', `the authorization server of "${flow.upstream}" answered with the error "${error.replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 64)}"`);
  }
  const code = params.get('code');
  if (!code) throw new FlowError('invalid_response', 'the authorization response has no code');
  return code;
}

/**
 * The token request of RFC 6749 §4.1.3, with the PKCE verifier and the RFC 8707 `resource`.
 * @throws FlowError when the server refuses or cannot be reached
 */
async function redeemCode(deps: ExchangeDeps, flow: UpstreamFlow, code: string, abort: AbortSignal | undefined): Promise<TokenResponse> {
  try {
    return await requestToken({
      fetch: deps.fetch,
      endpoint: flow.server.tokenEndpoint,
      client: flow.client,
      params: {
        grant_type: 'authorization_code',
        code,
        redirect_uri: deps.registration.redirectUri,
        code_verifier: flow.codeVerifier,
        resource: flow.resource,
      },
      signal: abort,
    });
  } catch (err) {
    if (!(err instanceof TokenEndpointError)) throw err;
    // The code was issued to the registration the server has now forgotten: no new registration
    // can redeem it, so the user starts again, and that flow registers anew.
    if (await forgetUnknownClient(deps.registration, flow.server.issuer, flow.client, err)) {
      throw new FlowError('exchange_failed', `the authorization server of "${flow.upstream}" no longer knows this gateway's registration; it has been renewed: start again from your agent`, { cause: err });
    }
    throw new FlowError('exchange_failed', `the code could not be exchanged: ${err.message}`, { cause: err });
  }
}
