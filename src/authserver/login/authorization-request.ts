/**
 * The checks of an authorization request once its client and redirect URI are verified
 * (RFC 6749 §4.1.1, OAuth 2.1 §4.1.1): single parameters, no request objects, `response_type=code`,
 * PKCE with S256 (RFC 7636), exactly one of our resources (RFC 8707) and the scopes the client
 * may have (RFC 6749 §3.3). Each refusal is an {@link AuthorizationError}, sent back to the client.
 */
import { SCOPE } from '../clients/client-metadata.ts';
import type { ClientRecord, PendingAuthorization } from '../records/records.ts';
import type { AuthorizationErrorCode } from './authorization-response.ts';
import type { LoginFlow } from './types.ts';

/** A refusal to send back to the client's redirect URI (RFC 6749 §4.1.2.1). */
export class AuthorizationError extends Error {
  readonly code: AuthorizationErrorCode;
  constructor(code: AuthorizationErrorCode, description: string) {
    super(description);
    this.code = code;
  }
}

/** RFC 7636 §4.2: BASE64URL(SHA-256(verifier)) is 43 characters. */
const S256_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;
/** Parameters that must not appear twice (RFC 6749 §3.1). `resource` may (RFC 8707) but we take one. */
const SINGLE = ['client_id', 'redirect_uri', 'response_type', 'code_challenge', 'code_challenge_method', 'scope', 'state', 'prompt'];

/** What the checks allow: the login flow's scopes and connect chain, and our resources. */
export interface RequestPolicy extends Pick<LoginFlow, 'scopesSupported' | 'defaultScopes' | 'connect'> {
  /** Our resource URLs, keyed without a trailing slash (a client may add or drop one). */
  resources: ReadonlyMap<string, string>;
}

/** The request as the authorization endpoint parks it, before the IdP login is started. */
export type CheckedRequest = Pick<PendingAuthorization, 'clientId' | 'redirectUri' | 'codeChallenge' | 'resource' | 'scopes'> & {
  clientState: string | undefined;
};

/** The policy of `flow`, built once per endpoint. */
export function requestPolicyOf(flow: LoginFlow): RequestPolicy {
  return {
    scopesSupported: flow.scopesSupported,
    defaultScopes: flow.defaultScopes,
    connect: flow.connect,
    resources: new Map(flow.resources.map((r) => [withoutTrailingSlash(r), r])),
  };
}

/**
 * Checks the request of a verified `client` answering at `redirectUri`.
 * @throws AuthorizationError for the first check that fails.
 */
export function checkRequest(policy: RequestPolicy, client: ClientRecord, params: URLSearchParams, redirectUri: string, state: string | undefined): CheckedRequest {
  const repeated = SINGLE.find((name) => params.getAll(name).length > 1);
  if (repeated) throw new AuthorizationError('invalid_request', `parameter ${repeated} is repeated`);
  if (params.has('request')) throw new AuthorizationError('request_not_supported', 'request objects are not supported');
  if (params.has('request_uri')) throw new AuthorizationError('request_uri_not_supported', 'request_uri is not supported');

  const responseType = params.get('response_type');
  if (!responseType) throw new AuthorizationError('invalid_request', 'response_type is required');
  if (responseType !== 'code') throw new AuthorizationError('unsupported_response_type', 'only response_type=code is supported');
  if (!client.grantTypes.includes('authorization_code')) {
    throw new AuthorizationError('unauthorized_client', 'the client is not registered for the authorization_code grant');
  }

  // PKCE with S256 is required of every client (OAuth 2.1 §4.1.1); "plain" is refused.
  const challenge = params.get('code_challenge');
  if (!challenge) throw new AuthorizationError('invalid_request', 'code_challenge is required (PKCE)');
  if (params.get('code_challenge_method') !== 'S256') throw new AuthorizationError('invalid_request', 'code_challenge_method must be S256');
  if (!S256_CHALLENGE.test(challenge)) throw new AuthorizationError('invalid_request', 'code_challenge must be 43 base64url characters (S256)');

  if (params.get('prompt')?.split(' ').includes('none')) {
    throw new AuthorizationError('login_required', 'a sign-in at the identity provider is required');
  }

  return { clientId: client.clientId, redirectUri, codeChallenge: challenge, resource: checkResource(policy, params), scopes: checkScope(policy, client, params), clientState: state };
}

/** RFC 8707: the token is for exactly one of our upstreams. */
function checkResource(policy: RequestPolicy, params: URLSearchParams): string {
  const { resources } = policy;
  const requested = params.getAll('resource');
  if (requested.length > 1) throw new AuthorizationError('invalid_target', 'ask for one resource at a time');
  if (requested.length === 0) {
    if (resources.size === 1) return [...resources.values()][0]!;
    throw new AuthorizationError('invalid_target', 'resource is required: name the MCP server URL the token is for');
  }
  const resource = resources.get(withoutTrailingSlash(requested[0]!));
  if (!resource) throw new AuthorizationError('invalid_target', 'resource is not an MCP server of this gateway');
  return resource;
}

/** RFC 6749 §3.3: unknown scopes are dropped; none asked → the defaults; none left → invalid_scope. */
function checkScope(policy: RequestPolicy, client: ClientRecord, params: URLSearchParams): string[] {
  const scope = params.get('scope');
  if (scope !== null && scope !== '' && (scope.length > 1000 || !SCOPE.test(scope))) {
    throw new AuthorizationError('invalid_scope', 'scope must be space-separated scope tokens');
  }
  const registered = client.scope?.split(' ');
  // A connect scope grants only the user's own upstream connection, made by the user in the browser
  // (the re-challenge chain): any client may ask for it, whatever scope it registered.
  const allowed = (s: string) => policy.connect?.handles(s) || (policy.scopesSupported.includes(s) && (!registered || registered.includes(s)));
  const requested = scope ? [...new Set(scope.split(' '))] : policy.defaultScopes;
  const granted = requested.filter(allowed);
  if (granted.length === 0) throw new AuthorizationError('invalid_scope', `no requested scope is available; this server offers: ${policy.scopesSupported.join(' ')}`);
  return granted;
}

function withoutTrailingSlash(url: string): string {
  return url.endsWith('/') ? url.slice(0, -1) : url;
}
