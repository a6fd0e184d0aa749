/**
 * `GET /oauth/authorize` (RFC 6749 §4.1.1, OAuth 2.1): checks the client's request,
 * parks it (single use, 10 min) and sends the browser to the company IdP with our own state,
 * nonce and PKCE.
 *
 * Two phases of errors (RFC 6749 §4.1.2.1): until the client and its redirect URI are verified,
 * an error is an HTML page (redirecting to an unverified URI would make us an open redirector);
 * afterwards it goes back to the client as `error`, `state` and `iss` on its redirect URI.
 */
import { InvalidClient, InvalidRequest } from '../../http/errors.ts';
import { describeCause } from '../../http/server.ts';
import type { Handler, RequestContext } from '../../http/router.ts';
import { IdpError } from '../../idp/types.ts';
import { sendAuthorizationError, type AuthorizationErrorCode } from './authorization-response.ts';
import { SCOPE } from '../clients/client-metadata.ts';
import { withHtmlErrors } from './html.ts';
import type { LoginFlow } from './types.ts';
import type { ClientRecord, PendingAuthorization } from '../records/records.ts';
import { matchRedirectUri, redirectUriProblem } from '../clients/redirect-uri.ts';
import { idpRoundTrip } from './cookies.ts';

/** A refusal to send back to the client's redirect URI. */
class AuthorizationError extends Error {
  readonly code: AuthorizationErrorCode;
  constructor(code: AuthorizationErrorCode, description: string) {
    super(description);
    this.code = code;
  }
}

/** RFC 7636 §4.2: BASE64URL(SHA-256(verifier)) is 43 characters. */
const S256_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;
/** Longest `state` we carry, in characters. */
const MAX_STATE = 1024;
/** A registration's idle expiry is slid at most once a day (a write per login is not needed). */
const TOUCH_INTERVAL_MS = 86_400_000;
/** Parameters that must not appear twice (RFC 6749 §3.1). `resource` may (RFC 8707) but we take one. */
const SINGLE = ['client_id', 'redirect_uri', 'response_type', 'code_challenge', 'code_challenge_method', 'scope', 'state', 'prompt'];

/** Creates the handler of `GET /oauth/authorize`. */
export function createAuthorizeEndpoint(flow: LoginFlow): Handler {
  const resources = new Map(flow.resources.map((r) => [withoutTrailingSlash(r), r]));

  return withHtmlErrors(flow.logger, async function authorize(ctx) {
    const params = ctx.url.searchParams;

    // Phase 1: who is asking, and where may we answer? Errors are pages.
    const client = await verifiedClient(ctx, params);
    const redirectUri = verifiedRedirectUri(client, params);
    ctx.log.clientId = client.clientId;

    // Phase 2: errors go back to the client.
    const rawState = params.get('state') ?? undefined;
    const state = rawState !== undefined && rawState.length <= MAX_STATE ? rawState : undefined;
    const to = { redirectUri, state, issuer: flow.issuer };
    try {
      if (rawState !== undefined && state === undefined) throw new AuthorizationError('invalid_request', `state must be at most ${MAX_STATE} characters`);
      const request = checkRequest(client, params, redirectUri, state);
      // Bound to this browser (cookies.ts idpRoundTrip): the callback refuses it from any other.
      const { state: ourState, setCookie } = idpRoundTrip(flow.cookies, flow.pendingTtlMs).start(ctx.req);
      const login = await flow.idp.startLogin(ourState);
      const pending: PendingAuthorization = { ...request, idpCodeVerifier: login.codeVerifier, idpNonce: login.nonce, createdAt: flow.now() };
      await flow.stores.pending.put(ourState, pending, flow.pendingTtlMs);
      await touch(client);
      ctx.res.writeHead(302, { location: login.url, 'set-cookie': [setCookie], 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' });
      ctx.res.end();
    } catch (error) {
      const { code, description } = toAuthorizationError(flow, ctx, error);
      sendAuthorizationError(ctx.res, to, code, description);
    }
  });

  async function verifiedClient(ctx: RequestContext, params: URLSearchParams): Promise<ClientRecord> {
    for (const name of ['client_id', 'redirect_uri']) {
      if (params.getAll(name).length > 1) throw new InvalidRequest(`The request repeats the ${name} parameter.`);
    }
    const clientId = params.get('client_id');
    if (!clientId) throw new InvalidRequest('The request does not say which application is asking (client_id is missing).');
    let client: ClientRecord | undefined;
    try {
      client = await flow.clients(clientId, ctx.signal);
    } catch (error) {
      if (error instanceof InvalidClient) throw new InvalidRequest(`The application could not be verified: ${error.message}.`, { cause: error });
      throw error;
    }
    if (!client) throw new InvalidRequest('This application is not registered here (unknown client_id). It may have expired: let the application register again.');
    return client;
  }

  function verifiedRedirectUri(client: ClientRecord, params: URLSearchParams): string {
    const uri = registeredRedirectUri(client, params.get('redirect_uri'));
    // The operator's scheme lists may have changed since the client registered: they apply now.
    const problem = flow.redirectSchemes && redirectUriProblem(uri, flow.redirectSchemes);
    if (problem) throw new InvalidRequest(`The return address (redirect_uri) ${problem}.`);
    return uri;
  }

  function registeredRedirectUri(client: ClientRecord, requested: string | null): string {
    if (requested === null) {
      // OAuth 2.1 §4.1.1: may be omitted only when exactly one is registered.
      if (client.redirectUris.length === 1) return client.redirectUris[0]!;
      throw new InvalidRequest('The request does not say where to return (redirect_uri is missing).');
    }
    const matched = matchRedirectUri(client.redirectUris, requested);
    if (!matched) throw new InvalidRequest('The return address (redirect_uri) is not one this application registered.');
    return matched;
  }

  function checkRequest(client: ClientRecord, params: URLSearchParams, redirectUri: string, state: string | undefined) {
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

    return { clientId: client.clientId, redirectUri, codeChallenge: challenge, resource: checkResource(params), scopes: checkScope(client, params), clientState: state };
  }

  /** RFC 8707: the token is for exactly one of our upstreams. */
  function checkResource(params: URLSearchParams): string {
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
  function checkScope(client: ClientRecord, params: URLSearchParams): string[] {
    const scope = params.get('scope');
    if (scope !== null && scope !== '' && (scope.length > 1000 || !SCOPE.test(scope))) {
      throw new AuthorizationError('invalid_scope', 'scope must be space-separated scope tokens');
    }
    const registered = client.scope?.split(' ');
    // A connect scope grants only the user's own upstream connection, made by the user in the browser
    // (the re-challenge chain): any client may ask for it, whatever scope it registered.
    const allowed = (s: string) => flow.connect?.handles(s) || (flow.scopesSupported.includes(s) && (!registered || registered.includes(s)));
    const requested = scope ? [...new Set(scope.split(' '))] : flow.defaultScopes;
    const granted = requested.filter(allowed);
    if (granted.length === 0) throw new AuthorizationError('invalid_scope', `no requested scope is available; this server offers: ${flow.scopesSupported.join(' ')}`);
    return granted;
  }

  async function touch(client: ClientRecord): Promise<void> {
    const now = flow.now();
    // A registration not used yet keeps its short life: an anonymous authorization request is no
    // use (anyone can send one); its first sign-in is (callback.ts).
    if (client.kind !== 'dcr' || client.lastUsedAt === undefined || now - client.lastUsedAt < TOUCH_INTERVAL_MS) return;
    await flow.stores.clients.put({ ...client, lastUsedAt: now }, flow.clientIdleTtlMs);
  }
}

function toAuthorizationError(flow: LoginFlow, ctx: RequestContext, error: unknown): { code: AuthorizationErrorCode; description: string } {
  if (error instanceof AuthorizationError) {
    ctx.log.error = error.code;
    return { code: error.code, description: error.message };
  }
  if (error instanceof IdpError) {
    ctx.log.error = `idp_${error.kind}`;
    flow.logger.warn({ msg: 'identity provider unavailable', reqId: ctx.requestId, failure: describeCause(error) });
    return { code: 'temporarily_unavailable', description: 'the identity provider cannot be reached; try again shortly' };
  }
  flow.logger.error({ msg: 'authorization request failed', reqId: ctx.requestId, failure: describeCause(error) });
  if (error instanceof Error && error.name === 'StoreUnavailableError') {
    ctx.log.error = 'temporarily_unavailable';
    return { code: 'temporarily_unavailable', description: 'the service is temporarily unavailable; try again shortly' };
  }
  ctx.log.error = 'server_error';
  return { code: 'server_error', description: 'internal error' };
}

function withoutTrailingSlash(url: string): string {
  return url.endsWith('/') ? url.slice(0, -1) : url;
}
