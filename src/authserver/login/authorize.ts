/**
 * `GET /oauth/authorize` (RFC 6749 §4.1.1, OAuth 2.1): checks the client's request,
 * parks it (single use, 10 min) and sends the browser to the company IdP with our own state,
 * nonce and PKCE.
 *
 * Two phases of errors (RFC 6749 §4.1.2.1): until the client and its redirect URI are verified,
 * an error is an HTML page (redirecting to an unverified URI would make us an open redirector);
 * afterwards it goes back to the client as `error`, `state` and `iss` on its redirect URI.
 * The checks of the second phase are in `authorization-request.ts`.
 */
import { InvalidClient, InvalidRequest } from '../../http/errors.ts';
import { describeCause } from '../../http/server.ts';
import type { Handler, RequestContext } from '../../http/router.ts';
import { IdpError } from '../../idp/types.ts';
import { sendAuthorizationError, type AuthorizationErrorCode } from './authorization-response.ts';
import { AuthorizationError, checkRequest, requestPolicyOf } from './authorization-request.ts';
import { withHtmlErrors } from './html.ts';
import type { LoginFlow } from './types.ts';
import type { ClientRecord, PendingAuthorization } from '../records/records.ts';
import { matchRedirectUri, redirectUriProblem } from '../clients/redirect-uri.ts';
import { idpRoundTrip } from './cookies.ts';

/** Longest `state` we carry, in characters. */
const MAX_STATE = 1024;
/** A registration's idle expiry is slid at most once a day (a write per login is not needed). */
const TOUCH_INTERVAL_MS = 86_400_000;

/** Creates the handler of `GET /oauth/authorize`. */
export function createAuthorizeEndpoint(flow: LoginFlow): Handler {
  const policy = requestPolicyOf(flow);

  return withHtmlErrors(flow.logger, async function authorize(ctx) {
    const params = ctx.url.searchParams;

    // Phase 1: who is asking, and where may we answer? Errors are pages.
    const client = await verifiedClient(flow, ctx, params);
    const redirectUri = verifiedRedirectUri(flow, client, params);
    ctx.log.clientId = client.clientId;

    // Phase 2: errors go back to the client.
    const rawState = params.get('state') ?? undefined;
    const state = rawState !== undefined && rawState.length <= MAX_STATE ? rawState : undefined;
    const to = { redirectUri, state, issuer: flow.issuer };
    try {
      if (rawState !== undefined && state === undefined) throw new AuthorizationError('invalid_request', `state must be at most ${MAX_STATE} characters`);
      const request = checkRequest(policy, client, params, redirectUri, state);
      // Bound to this browser (cookies.ts idpRoundTrip): the callback refuses it from any other.
      const { state: ourState, setCookie } = idpRoundTrip(flow.cookies, flow.pendingTtlMs).start(ctx.req);
      const login = await flow.idp.startLogin(ourState);
      const pending: PendingAuthorization = { ...request, idpCodeVerifier: login.codeVerifier, idpNonce: login.nonce, createdAt: flow.now() };
      await flow.stores.pending.put(ourState, pending, flow.pendingTtlMs);
      await touch(flow, client);
      ctx.res.writeHead(302, { location: login.url, 'set-cookie': [setCookie], 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' });
      ctx.res.end();
    } catch (error) {
      const { code, description } = toAuthorizationError(flow, ctx, error);
      sendAuthorizationError(ctx.res, to, code, description);
    }
  });
}

/** The client the request names, registered or by its metadata document; a page-error otherwise. */
async function verifiedClient(flow: LoginFlow, ctx: RequestContext, params: URLSearchParams): Promise<ClientRecord> {
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

/** The redirect URI to answer at: one the client registered, and one the operator still allows. */
function verifiedRedirectUri(flow: LoginFlow, client: ClientRecord, params: URLSearchParams): string {
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

/** Slides the idle expiry of a used registration (at most once a day). */
async function touch(flow: LoginFlow, client: ClientRecord): Promise<void> {
  const now = flow.now();
  // A registration not used yet keeps its short life: an anonymous authorization request is no
  // use (anyone can send one); its first sign-in is (callback.ts).
  if (client.kind !== 'dcr' || client.lastUsedAt === undefined || now - client.lastUsedAt < TOUCH_INTERVAL_MS) return;
  await flow.stores.clients.put({ ...client, lastUsedAt: now }, flow.clientIdleTtlMs);
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
