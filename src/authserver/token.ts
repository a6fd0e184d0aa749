/**
 * `POST /oauth/token` (RFC 6749 §3.2, OAuth 2.1 §3.2): the `authorization_code` grant with PKCE
 * (RFC 7636) and resource binding (RFC 8707), and the `refresh_token` grant with rotation
 * (OAuth 2.1 §4.3.1). A reused code or refresh token revokes the whole session (token family).
 * Every failure is an RFC 6749 §5.2 error carried by the thrown HttpError.
 */
import type { Logger } from '../observability/logger.ts';
import { sessionTag } from '../observability/logger.ts';
import { InvalidGrant, InvalidRequest, InvalidScope, InvalidTarget, UnauthorizedClient, UnsupportedGrantType } from '../http/errors.ts';
import type { RequestContext, Route } from '../http/router.ts';
import { authenticateClient, type ClientResolver } from './client-auth.ts';
import { readForm } from './form.ts';
import type { AuthStores, ClientRecord, RefreshTokenRecord } from './records.ts';
import { isPkceVerifier, newRefreshToken, pkceChallenge, safeEqual, type TokenIssuer } from './tokens.ts';
import type { StepUpMarks } from './step-up.ts';
import type { EndSession } from './session-end.ts';
import { answerOAuthPreflight } from '../http/cors.ts';

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
  /** Sessions the gateway challenged for a scope their grant lacks: their next refresh is refused (step-up.ts). */
  stepUp?: Pick<StepUpMarks, 'take'>;
  /** The one session-ending path (session-end.ts): a reused code or refresh token ends the session and its upstream grants. */
  endSession: EndSession;
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

/** What a grant settled on, before the tokens are minted. */
interface Grant {
  client: ClientRecord;
  subject: string;
  sessionId: string;
  resource: string;
  /** Scopes of the access token. */
  scopes: string[];
  /** Scopes the new refresh token carries: always the original grant (RFC 6749 §6). */
  grantedScopes: string[];
  /** The session's end: a new refresh token lives until then. */
  sessionExpiresAt: number;
}

/** The route of the token endpoint (plus its CORS preflight: browser-based agents call it directly). */
export function createTokenRoutes(options: TokenEndpointOptions): Route[] {
  const { stores, logger, endSession } = options;
  if (typeof endSession !== 'function') throw new TypeError('endSession must be a function');
  const now = options.now ?? Date.now;
  const resolveClient = options.resolveClient ?? ((id: string) => stores.clients.get(id));
  if (!Number.isSafeInteger(options.refreshTokenTtlMs) || options.refreshTokenTtlMs <= 0) throw new TypeError('refreshTokenTtlMs must be a positive integer');

  async function token(ctx: RequestContext): Promise<void> {
    ctx.res.setHeader('access-control-allow-origin', '*');
    const params = await readForm(ctx.req);
    const client = await authenticateClient(ctx.req.headers, params, resolveClient);
    ctx.log.client = client.clientId.slice(0, 64);
    const grantType = params.get('grant_type');
    if (!grantType) throw new InvalidRequest('grant_type is required');
    ctx.log.grant = grantType.slice(0, 32);
    if (grantType !== 'authorization_code' && grantType !== 'refresh_token') {
      throw new UnsupportedGrantType('supported grant types: authorization_code, refresh_token');
    }
    if (!client.grantTypes.includes(grantType)) throw new UnauthorizedClient(`the client is not registered for the ${grantType} grant`);
    const grant = grantType === 'authorization_code' ? await redeemCode(client, params) : await redeemRefreshToken(client, params);
    const issued = await issueTokens(grant);
    await options.retainClient?.(client);
    sendTokens(ctx, issued);
  }

  /** RFC 6749 §4.1.3 with RFC 7636 §4.6 and RFC 8707 §2.2. */
  async function redeemCode(client: ClientRecord, params: Map<string, string>): Promise<Grant> {
    const code = params.get('code');
    const redirectUri = params.get('redirect_uri');
    if (!code) throw new InvalidRequest('code is required');
    if (!redirectUri) throw new InvalidRequest('redirect_uri is required');

    // Consumed before any check: a code that fails a binding is spent too, so a verifier cannot be guessed.
    const consumed = await stores.codes.consume(code);
    if (!consumed) throw new InvalidGrant('the authorization code is invalid or expired');
    if (consumed.reused) {
      // RFC 6749 §4.1.2: a code used twice may have been stolen; everything issued from it dies.
      await endSession(consumed.sessionId);
      logger.warn({ msg: 'authorization code reused: session revoked', sid: sessionTag(consumed.sessionId) });
      throw new InvalidGrant('the authorization code was already used');
    }
    const record = consumed.record;
    const refuse = async (error: Error): Promise<never> => {
      // The session was created for this code alone; it will never get tokens now (a chained
      // authorization may already have connected it upstream, so through the whole path).
      await endSession(record.sessionId);
      throw error;
    };
    if (record.clientId !== client.clientId) return refuse(new InvalidGrant('the authorization code was issued to another client'));
    if (record.redirectUri !== redirectUri) return refuse(new InvalidGrant('redirect_uri does not match the authorization request'));
    const verifier = params.get('code_verifier');
    if (!verifier || !isPkceVerifier(verifier) || !safeEqual(pkceChallenge(verifier), record.codeChallenge)) {
      return refuse(new InvalidGrant('PKCE verification failed'));
    }
    const resource = params.get('resource');
    if (resource !== undefined && resource !== record.resource) {
      return refuse(new InvalidTarget('resource does not match the authorization request'));
    }
    const session = await stores.sessions.get(record.sessionId);
    if (!session) throw new InvalidGrant('the session has ended');
    return {
      client,
      subject: record.subject,
      sessionId: record.sessionId,
      resource: record.resource,
      scopes: record.scopes,
      grantedScopes: record.scopes,
      sessionExpiresAt: session.expiresAt,
    };
  }

  /** RFC 6749 §6 with rotation (OAuth 2.1 §4.3.1) and reuse detection. */
  async function redeemRefreshToken(client: ClientRecord, params: Map<string, string>): Promise<Grant> {
    const presented = params.get('refresh_token');
    if (!presented) throw new InvalidRequest('refresh_token is required');
    // Looked at before it is rotated: another client presenting it must not spend the owner's token.
    const peeked = await stores.refreshTokens.peek(presented);
    if (!peeked) throw new InvalidGrant('the refresh token is invalid or expired');
    if (peeked.clientId !== client.clientId) throw new InvalidGrant('the refresh token was issued to another client');
    const requestedScopes = narrowScopes(params.get('scope'), peeked);
    const resource = params.get('resource');
    if (resource !== undefined && resource !== peeked.resource) throw new InvalidTarget('resource does not match the refresh token');
    // Before rotation: refused for a step-up, the refresh token stays as it was.
    if (await options.stepUp?.take(peeked.sessionId)) throw new InvalidGrant('a new authorization is needed for the scope the resource asked for');

    const rotated = await stores.refreshTokens.rotate(presented);
    if (!rotated) throw new InvalidGrant('the refresh token is invalid or expired');
    if (rotated.reused) {
      // OAuth 2.1 §4.3.1: a rotated token presented again means one of the two holders is an attacker.
      await endSession(rotated.record.sessionId);
      logger.warn({ msg: 'refresh token reused: session revoked', sid: sessionTag(rotated.record.sessionId) });
      throw new InvalidGrant('the refresh token was already used');
    }
    const record = rotated.record;
    const session = await stores.sessions.extend(record.sessionId, now() + options.refreshTokenTtlMs);
    if (!session) throw new InvalidGrant('the session has ended');
    return {
      client,
      subject: record.subject,
      sessionId: record.sessionId,
      resource: record.resource,
      scopes: requestedScopes,
      grantedScopes: record.scopes,
      sessionExpiresAt: session.expiresAt,
    };
  }

  async function issueTokens(grant: Grant): Promise<TokenResponse> {
    const access = await options.issuer.issueAccessToken({
      subject: grant.subject,
      resource: grant.resource,
      clientId: grant.client.clientId,
      scopes: grant.scopes,
      sessionId: grant.sessionId,
    });
    const response: TokenResponse = { access_token: access.token, token_type: 'Bearer', expires_in: access.expiresIn, scope: grant.scopes.join(' ') };
    const ttl = Math.min(options.refreshTokenTtlMs, grant.sessionExpiresAt - now());
    // A client that did not register the refresh_token grant gets none (RFC 7591 §2 grant_types).
    if (grant.client.grantTypes.includes('refresh_token') && ttl > 0) {
      const refreshToken = newRefreshToken();
      const record: RefreshTokenRecord = {
        sessionId: grant.sessionId,
        clientId: grant.client.clientId,
        resource: grant.resource,
        scopes: grant.grantedScopes,
        subject: grant.subject,
        createdAt: now(),
      };
      await stores.refreshTokens.put(refreshToken, record, Math.ceil(ttl));
      response.refresh_token = refreshToken;
    }
    return response;
  }


  const path = `${options.basePath}/oauth/token`;
  return [
    { method: 'POST', path, handler: token, name: '/oauth/token' },
    { method: 'OPTIONS', path, handler: answerOAuthPreflight, name: '/oauth/token' },
  ];
}

/** RFC 6749 §6: a refresh may ask for fewer scopes than granted, never more. */
function narrowScopes(scope: string | undefined, record: RefreshTokenRecord): string[] {
  const requested = scope?.split(' ').filter(Boolean) ?? [];
  if (requested.length === 0) return record.scopes;
  const granted = new Set(record.scopes);
  const extra = requested.filter((s) => !granted.has(s));
  if (extra.length > 0) throw new InvalidScope('a refresh cannot add scopes that were not granted');
  return [...new Set(requested)];
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
