/**
 * `POST /oauth/token` (RFC 6749 §3.2, OAuth 2.1 §3.2) as a pipeline: read the form, authenticate
 * the client, run the grant's handler (`code-grant.ts`: `authorization_code` with PKCE, RFC 7636,
 * and resource binding, RFC 8707; `refresh-grant.ts`: `refresh_token` with rotation, OAuth 2.1
 * §4.3.1), then mint and send the tokens. A reused code or refresh token revokes the whole session
 * (token family), except the immediately previous refresh token presented again by its client
 * within a short grace (`reuseGraceMs`): refused, without revoking anything. A refresh also ends a
 * session past its absolute lifetime, and one the company IdP no longer backs (checked once the
 * IdP access token has expired), so a user disabled at the IdP loses access within one IdP
 * access-token lifetime plus one of ours.
 * Every failure is an RFC 6749 §5.2 error carried by the thrown HttpError.
 */
import type { Logger } from '../../observability/logger.ts';
import { InvalidRequest, UnauthorizedClient, UnsupportedGrantType } from '../../http/errors.ts';
import type { IdpSessionTokens } from '../../credentials/idp-session.ts';
import type { RequestContext, Route } from '../../http/router.ts';
import { authenticateClient, type ClientResolver } from './client-auth.ts';
import { readForm } from '../../http/form.ts';
import type { AuthStores, ClientRecord, RefreshTokenRecord } from '../records/records.ts';
import { newRefreshToken, type TokenIssuer } from './mint.ts';
import type { StepUpMarks } from './step-up.ts';
import type { EndSession } from '../records/session-end.ts';
import { answerOAuthPreflight } from '../../http/cors.ts';
import { redeemCode } from './code-grant.ts';
import type { Grant, GrantDeps } from './grant.ts';
import { redeemRefreshToken } from './refresh-grant.ts';

/** Dependencies of the token endpoint. */
export interface TokenEndpointOptions {
  /** Base path of the public URL ('' or '/prefix'). */
  basePath: string;
  stores: AuthStores;
  issuer: TokenIssuer;
  /** How clients are found; default `stores.clients.get`. The authorize flow may add metadata-document clients. */
  resolveClient?: ClientResolver;
  /** How far each refresh slides the session, and a refresh token's lifetime (`authServer.refreshTokenTtl`), ms. */
  refreshTokenTtlMs: number;
  logger: Logger;
  /** Clock, epoch ms; default `Date.now`. */
  now?: () => number;
  /** Sessions the gateway challenged for a scope their grant lacks: their refreshes are refused while the mark lives (step-up.ts). */
  stepUp?: Pick<StepUpMarks, 'refuse'>;
  /** The one session-ending path (session-end.ts): a reused code or refresh token ends the session and its upstream grants. */
  endSession: EndSession;
  /**
   * How long after a rotation the immediately previous refresh token, presented again by its
   * client while the token issued in its place is still unused, is refused without revoking the
   * family (an agent's two concurrent refreshes, not a theft), in milliseconds. Default 30000.
   */
  reuseGraceMs?: number;
  /**
   * Absolute lifetime of a session from its login (`authServer.sessionMaxLifetime`), ms: no
   * refresh carries it further, and a refresh after it ends the session. Default 7 days.
   */
  sessionMaxLifetimeMs?: number;
  /**
   * The sessions' IdP tokens. When given, a refresh whose session's IdP access token has expired
   * first refreshes the IdP grant (once for the session, shared with the gateway path): the IdP
   * refusing ends the session (`invalid_grant`); the IdP unreachable answers 503
   * `temporarily_unavailable` and leaves the refresh token unspent. Absent: the IdP is not asked.
   */
  idpSession?: Pick<IdpSessionTokens, 'current'>;
  /** Called once tokens are issued: keeps a metadata-document client known while its grants are used (cimd.ts `retain`). */
  retainClient?: (client: ClientRecord) => Promise<void>;
}

/** The successful token response (RFC 6749 §5.1). */
interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  refresh_token?: string;
  scope: string;
}

/** The token endpoint's dependencies, defaults applied and checked. */
interface TokenEndpoint extends GrantDeps {
  issuer: TokenIssuer;
  resolveClient: ClientResolver;
  retainClient?: ((client: ClientRecord) => Promise<void>) | undefined;
}

/** The handler of each grant type we support, by its `grant_type` value. */
const GRANT_HANDLERS = {
  authorization_code: redeemCode,
  refresh_token: redeemRefreshToken,
} satisfies Record<string, (deps: GrantDeps, client: ClientRecord, params: Map<string, string>) => Promise<Grant>>;

type SupportedGrantType = keyof typeof GRANT_HANDLERS;

/** The route of the token endpoint (plus its CORS preflight: browser-based agents call it directly). */
export function createTokenRoutes(options: TokenEndpointOptions): Route[] {
  const endpoint = tokenEndpointOf(options);
  const path = `${options.basePath}/oauth/token`;
  return [
    { method: 'POST', path, handler: (ctx) => answerTokenRequest(endpoint, ctx), name: '/oauth/token' },
    { method: 'OPTIONS', path, handler: answerOAuthPreflight, name: '/oauth/token' },
  ];
}

/** Checks the options and applies their defaults. */
function tokenEndpointOf(options: TokenEndpointOptions): TokenEndpoint {
  const { stores, endSession } = options;
  if (typeof endSession !== 'function') throw new TypeError('endSession must be a function');
  if (!Number.isSafeInteger(options.refreshTokenTtlMs) || options.refreshTokenTtlMs <= 0) throw new TypeError('refreshTokenTtlMs must be a positive integer');
  const reuseGraceMs = options.reuseGraceMs ?? 30_000;
  if (!Number.isSafeInteger(reuseGraceMs) || reuseGraceMs < 0) throw new TypeError('reuseGraceMs must be a non-negative integer');
  const sessionMaxLifetimeMs = options.sessionMaxLifetimeMs ?? 7 * 86_400_000;
  if (!Number.isSafeInteger(sessionMaxLifetimeMs) || sessionMaxLifetimeMs <= 0) throw new TypeError('sessionMaxLifetimeMs must be a positive integer');
  return {
    stores,
    logger: options.logger,
    endSession,
    now: options.now ?? Date.now,
    refreshTokenTtlMs: options.refreshTokenTtlMs,
    reuseGraceMs,
    sessionMaxLifetimeMs,
    stepUp: options.stepUp,
    idpSession: options.idpSession,
    issuer: options.issuer,
    resolveClient: options.resolveClient ?? ((id: string) => stores.clients.get(id)),
    retainClient: options.retainClient,
  };
}

/** `POST /oauth/token`: form → client → grant → tokens. */
async function answerTokenRequest(endpoint: TokenEndpoint, ctx: RequestContext): Promise<void> {
  ctx.res.setHeader('access-control-allow-origin', '*');
  const params = await readForm(ctx.req);
  const client = await authenticateClient(ctx.req.headers, params, endpoint.resolveClient);
  ctx.log.client = client.clientId.slice(0, 64);
  const grantType = grantTypeOf(ctx, client, params);
  const grant = await GRANT_HANDLERS[grantType](endpoint, client, params);
  const issued = await issueTokens(endpoint, grant);
  await endpoint.retainClient?.(client);
  sendTokens(ctx, issued);
}

/** The request's `grant_type`, once known to be one we support and the client registered (RFC 7591 §2). */
function grantTypeOf(ctx: RequestContext, client: ClientRecord, params: Map<string, string>): SupportedGrantType {
  const grantType = params.get('grant_type');
  if (!grantType) throw new InvalidRequest('grant_type is required');
  ctx.log.grant = grantType.slice(0, 32);
  if (!Object.hasOwn(GRANT_HANDLERS, grantType)) {
    throw new UnsupportedGrantType(`supported grant types: ${Object.keys(GRANT_HANDLERS).join(', ')}`);
  }
  if (!client.grantTypes.includes(grantType)) throw new UnauthorizedClient(`the client is not registered for the ${grantType} grant`);
  return grantType as SupportedGrantType;
}

/** Mints the access token, and a refresh token when the client may have one and the session has time left. */
async function issueTokens(endpoint: TokenEndpoint, grant: Grant): Promise<TokenResponse> {
  const { now } = endpoint;
  const access = await endpoint.issuer.issueAccessToken({
    subject: grant.subject,
    resource: grant.resource,
    clientId: grant.client.clientId,
    scopes: grant.scopes,
    sessionId: grant.sessionId,
  });
  const response: TokenResponse = { access_token: access.token, token_type: 'Bearer', expires_in: access.expiresIn, scope: grant.scopes.join(' ') };
  const ttl = Math.min(endpoint.refreshTokenTtlMs, grant.sessionExpiresAt - now());
  // A client that did not register the refresh_token grant gets none (RFC 7591 §2 grant_types).
  if (grant.client.grantTypes.includes('refresh_token') && ttl > 0) {
    const refreshToken = grant.refreshToken ?? newRefreshToken();
    const record: RefreshTokenRecord = {
      sessionId: grant.sessionId,
      clientId: grant.client.clientId,
      resource: grant.resource,
      scopes: grant.grantedScopes,
      subject: grant.subject,
      createdAt: now(),
    };
    await endpoint.stores.refreshTokens.put(refreshToken, record, Math.ceil(ttl));
    response.refresh_token = refreshToken;
  }
  return response;
}

/** Writes a token response: JSON, never cached (RFC 6749 §5.1). */
function sendTokens(ctx: RequestContext, body: TokenResponse): void {
  const payload = JSON.stringify(body);
  ctx.res.writeHead(200, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
    pragma: 'no-cache',
  });
  ctx.res.end(payload);
}
