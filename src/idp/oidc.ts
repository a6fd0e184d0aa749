/**
 * The company IdP through openid-client: authorization code + PKCE (S256) + nonce,
 * ID token validation, refresh. Failures become `IdpError`: `rejected` when the IdP said no
 * (an OAuth 4xx error such as `invalid_grant`, a bad ID token), `unavailable` when it could not
 * answer (5xx, network, timeout): an outage is never mistaken for a logout.
 */
import * as client from 'openid-client';
import type { Config, OidcIdpConfig } from '../config/schema.ts';
import type { IdpTokens } from '../authserver/records/records.ts';
import { createLimitedFetch, ResponseTooLargeError } from '../net/limited-fetch.ts';
import { IdpAccountRefused, IdpError, type IdpClient, type IdpLoginResult, type IdpLoginStart } from './types.ts';

/** Options of {@link createOidcIdpClient}; checked when it is called. */
export interface OidcIdpClientOptions {
  /** The `idp:` section of the configuration. */
  config: NonNullable<Config['idp']>;
  /** Our callback, `{issuer}/oauth/callback`; must be registered at the IdP. */
  redirectUri: string;
  /** Allows an `http:` issuer (dev mode only; the config schema refuses it otherwise). */
  devMode: boolean;
  /** Fetch implementation for every request to the IdP (tests); default the global fetch. */
  fetch?: typeof fetch;
  /** Time limit of each request to the IdP, the body read included, in seconds. Default 10. */
  timeoutSeconds?: number;
  /** Largest response body accepted from the IdP, in bytes. Default 1 048 576 (1 MiB). */
  maxResponseBytes?: number;
  /** The clock, epoch milliseconds (access-token expiry). Default `Date.now`. */
  now?: () => number;
}

/**
 * Creates the IdP client. Discovery happens lazily on first use and is retried on the next use
 * after a failure, so the gateway starts (and answers `/healthz`) while the IdP is briefly down.
 * @throws TypeError for an invalid `redirectUri` or an `http:` issuer outside dev mode.
 */
export function createOidcIdpClient(options: OidcIdpClientOptions): IdpClient {
  const idp = resolveOidcIdp(options);
  return {
    startLogin: (state) => startLogin(idp, state),
    finishLogin: (callbackUrl, expected) => finishLogin(idp, callbackUrl, expected),
    refresh: (current) => refresh(idp, current),
  };
}

/** The checked settings of one client, which the steps below take as their first argument. */
interface OidcIdp {
  config: OidcIdpConfig;
  redirectUri: string;
  /** `config.scopes` as the `scope` parameter. */
  scope: string;
  now: () => number;
  /** The IdP's metadata and our client at it, discovered on first use ({@link lazyDiscovery}). */
  discover: () => Promise<client.Configuration>;
}

/** What discovery needs to reach the IdP. */
interface DiscoverySettings {
  issuer: URL;
  config: OidcIdpConfig;
  /** Seconds, as openid-client counts them. */
  timeout: number;
  fetch: client.CustomFetch;
}

/** Checks the options and fills in the defaults. */
function resolveOidcIdp(options: OidcIdpClientOptions): OidcIdp {
  const { config, redirectUri, devMode } = options;
  if (config.kind === 'oauth2') throw new TypeError('idp.kind oauth2 is served by createOAuth2IdpClient (oauth2.ts)');
  const issuer = new URL(config.issuer);
  if (issuer.protocol !== 'https:' && !(devMode && issuer.protocol === 'http:')) {
    throw new TypeError('idp.issuer must be an https URL (http only in devMode)');
  }
  if (!URL.canParse(redirectUri)) throw new TypeError('redirectUri must be an absolute URL');
  const timeout = options.timeoutSeconds ?? 10;
  // The IdP is the operator's, often on an internal address: exempt from the address policy of the
  // guarded fetcher, not from its size and time limits (docs/threat-model.md).
  const limitedFetch = createLimitedFetch({ fetch: options.fetch, maxBytes: options.maxResponseBytes ?? 1_048_576, timeoutMs: timeout * 1000 }) as client.CustomFetch;
  return {
    config,
    redirectUri,
    scope: config.scopes.join(' '),
    now: options.now ?? Date.now,
    discover: lazyDiscovery({ issuer, config, timeout, fetch: limitedFetch }),
  };
}

/** Discovery on first use, shared by the callers that follow; a failure is not kept. */
function lazyDiscovery(settings: DiscoverySettings): () => Promise<client.Configuration> {
  let configuration: Promise<client.Configuration> | undefined;
  return () => {
    configuration ??= discoverOnce(settings).catch((error: unknown) => {
      // Forget the failure: the next login tries again instead of failing until a restart.
      configuration = undefined;
      throw classify(error, 'discovery at the identity provider failed', true);
    });
    return configuration;
  };
}

async function discoverOnce({ issuer, config, timeout, fetch }: DiscoverySettings): Promise<client.Configuration> {
  const requestOptions: client.DiscoveryRequestOptions = { timeout };
  requestOptions[client.customFetch] = fetch;
  if (issuer.protocol === 'http:') requestOptions.execute = [client.allowInsecureRequests];
  const discovered = await client.discovery(issuer, config.clientId, undefined, client.None(), requestOptions);
  const server = discovered.serverMetadata();
  const configured = new client.Configuration(server, config.clientId, clientMetadata(config), clientAuth(config, server));
  configured.timeout = timeout;
  configured[client.customFetch] = fetch;
  if (issuer.protocol === 'http:') client.allowInsecureRequests(configured);
  return configured;
}

function clientMetadata(config: OidcIdpConfig): Partial<client.ClientMetadata> {
  return config.clientSecret ? { client_secret: config.clientSecret } : {};
}

/** `client_secret_post` unless the IdP only lists `client_secret_basic`; a client without a secret is public (PKCE only). */
function clientAuth(config: OidcIdpConfig, server: client.ServerMetadata): client.ClientAuth {
  if (!config.clientSecret) return client.None();
  const supported = server.token_endpoint_auth_methods_supported;
  if (supported && !supported.includes('client_secret_post') && supported.includes('client_secret_basic')) {
    return client.ClientSecretBasic(config.clientSecret);
  }
  return client.ClientSecretPost(config.clientSecret);
}

/** The authorization request: PKCE (S256, RFC 7636) and a nonce (OIDC Core §3.1.2.1). */
async function startLogin(idp: OidcIdp, state: string): Promise<IdpLoginStart> {
  const configured = await idp.discover();
  const codeVerifier = client.randomPKCECodeVerifier();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(configured, {
    // Operator parameters first, so they can never replace the ones the flow's security rests on.
    ...idp.config.authParams,
    redirect_uri: idp.redirectUri,
    response_type: 'code',
    scope: idp.scope,
    state,
    nonce,
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
  });
  return { url: url.href, codeVerifier, nonce };
}

/** The callback: code exchanged, ID token validated (issuer, audience, nonce), the user read from `userClaim`. */
async function finishLogin(idp: OidcIdp, callbackUrl: URL, expected: { state: string; codeVerifier: string; nonce: string }): Promise<IdpLoginResult> {
  const { config } = idp;
  const configured = await idp.discover();
  // openid-client sends the callback URL without its query as `redirect_uri`; rebuild it from
  // the registered value so a path prefix stripped by an ingress cannot cause a mismatch.
  const current = new URL(idp.redirectUri);
  current.search = callbackUrl.search;
  let response: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers;
  try {
    response = await client.authorizationCodeGrant(configured, current, {
      pkceCodeVerifier: expected.codeVerifier,
      expectedState: expected.state,
      expectedNonce: expected.nonce,
      idTokenExpected: true,
    });
  } catch (error) {
    throw classify(error, 'the identity provider did not complete the login');
  }
  const claims = response.claims() as Record<string, unknown> | undefined;
  const subject = claims?.[config.userClaim];
  if ((typeof subject !== 'string' && typeof subject !== 'number') || subject === '') {
    throw new IdpError('rejected', `the ID token has no usable "${config.userClaim}" claim`);
  }
  // An e-mail address names a user only once the IdP has verified it belongs to them: many IdPs
  // let anyone set any address on their own account (OIDC Core §5.7).
  if (config.userClaim === 'email' && claims?.email_verified !== true && claims?.email_verified !== 'true') {
    throw new IdpAccountRefused('Your identity provider has not verified the e-mail address of your account, and this service identifies users by e-mail address. Verify it at your identity provider, then sign in again.');
  }
  return { subject: String(subject), tokens: toTokens(idp, response), claims: claims ?? {} };
}

/** The refresh-token grant (OIDC Core §12). */
async function refresh(idp: OidcIdp, current: IdpTokens): Promise<IdpTokens> {
  if (!current.refreshToken) throw new IdpError('rejected', 'no refresh token was issued for this session');
  const configured = await idp.discover();
  try {
    return toTokens(idp, await client.refreshTokenGrant(configured, current.refreshToken), current);
  } catch (error) {
    throw classify(error, 'the refresh at the identity provider failed');
  }
}

function toTokens(idp: OidcIdp, response: client.TokenEndpointResponse, carried?: IdpTokens): IdpTokens {
  return {
    accessToken: response.access_token,
    refreshToken: response.refresh_token ?? carried?.refreshToken,
    idToken: response.id_token ?? carried?.idToken,
    expiresAt: typeof response.expires_in === 'number' ? idp.now() + response.expires_in * 1000 : undefined,
    scope: response.scope ?? carried?.scope,
    tokenType: response.token_type,
  };
}

/**
 * Sorts an openid-client failure into `rejected` (the IdP answered no: a 4xx OAuth error, an
 * invalid response or ID token) and `unavailable` (it did not answer usably: 5xx, network,
 * timeout). Discovery failures are always `unavailable`: there is no grant to end yet.
 */
function classify(error: unknown, message: string, discovery = false): IdpError {
  if (error instanceof IdpError) return error;
  // openid-client wraps what the fetch threw.
  if (error instanceof ResponseTooLargeError || (error instanceof Error && error.cause instanceof ResponseTooLargeError)) {
    return new IdpError('unavailable', `${message} (the response is too large)`, { cause: error });
  }
  if (error instanceof client.ResponseBodyError || error instanceof client.WWWAuthenticateChallengeError) {
    const kind = error.status >= 500 || discovery ? 'unavailable' : 'rejected';
    const oauthError = error instanceof client.ResponseBodyError ? error.error : undefined;
    return new IdpError(kind, `${message} (HTTP ${error.status}${oauthError ? `, ${oauthError}` : ''})`, { oauthError, cause: error });
  }
  if (error instanceof client.AuthorizationResponseError) {
    return new IdpError('rejected', `${message} (${error.error})`, { oauthError: error.error, cause: error });
  }
  if (error instanceof client.ClientError) {
    const status = error.cause instanceof Response ? error.cause.status : undefined;
    const transport = error.code === 'OAUTH_TIMEOUT' || error.code === 'OAUTH_ABORT';
    const kind = discovery || transport || (status !== undefined && status >= 500) ? 'unavailable' : 'rejected';
    return new IdpError(kind, `${message} (${error.code ?? 'client error'}${status ? `, HTTP ${status}` : ''})`, { cause: error });
  }
  // fetch() fails with a TypeError on connection errors; timeouts and aborts are DOMExceptions.
  return new IdpError('unavailable', `${message} (identity provider unreachable)`, { cause: error });
}
