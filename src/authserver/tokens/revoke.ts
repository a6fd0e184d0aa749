/**
 * Ending tokens and sessions:
 * - `POST /oauth/revoke` — RFC 7009 token revocation. A refresh token or an access token ends its
 *   whole session (token family: our refresh tokens, the IdP's tokens kept for it). Unknown,
 *   expired or foreign tokens get 200 as well (§2.2), so the endpoint reveals nothing.
 * - `POST /oauth/logout` — with one of our access tokens as `Authorization: Bearer`: ends that session.
 * - `POST /oauth/logout/all` — same authentication: ends every session of the token's user
 *   ("sign out everywhere"). A separate path rather than a query flag, so a proxy rule or an
 *   access log can tell the two apart.
 *
 * Every ending goes through `endSession` (session-end.ts), so the upstream OAuth grants of the
 * session are forgotten and revoked at their own authorization servers as well.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Logger } from '../../observability/logger.ts';
import { sessionTag } from '../../observability/logger.ts';
import { InvalidRequest, InvalidToken } from '../../http/errors.ts';
import type { RequestContext, Route } from '../../http/router.ts';
import { authenticateClient, type ClientResolver } from './client-auth.ts';
import { readForm } from '../../http/form.ts';
import type { SigningKeys } from './keys.ts';
import type { AuthStores } from '../records/records.ts';
import type { EndSession } from '../records/session-end.ts';
import { verifyAccessToken, type AccessTokenClaims } from './mint.ts';
import { answerOAuthPreflight } from '../../http/cors.ts';

/** Dependencies of the revocation and logout endpoints. */
export interface RevocationOptions {
  basePath: string;
  stores: AuthStores;
  /** Our issuer identifier. */
  issuer: string;
  keys: SigningKeys;
  /** Every upstream resource URL: the audiences our access tokens can carry. */
  resources: readonly string[];
  resolveClient?: ClientResolver;
  /** Ends a session and whatever else is kept for it (`createSessionEnding`). Default: `stores.sessions.revoke` alone. */
  endSession?: EndSession;
  logger: Logger;
  now?: () => number;
}

/** The routes of `/oauth/revoke`, `/oauth/logout` and `/oauth/logout/all`. */
export function createRevocationRoutes(options: RevocationOptions): Route[] {
  const { stores, logger } = options;
  const resolveClient = options.resolveClient ?? ((id: string) => stores.clients.get(id));
  const endSession = options.endSession ?? ((sessionId: string) => stores.sessions.revoke(sessionId));
  const verifyOptions = { issuer: options.issuer, keys: options.keys, audience: options.resources, now: options.now };

  async function ours(token: string): Promise<AccessTokenClaims | undefined> {
    try {
      return await verifyAccessToken(token, verifyOptions);
    } catch {
      return undefined;
    }
  }

  /** RFC 7009 §2.1. */
  async function revoke(ctx: RequestContext): Promise<void> {
    ctx.res.setHeader('access-control-allow-origin', '*');
    const params = await readForm(ctx.req);
    const client = await authenticateClient(ctx.req.headers, params, resolveClient);
    const token = params.get('token');
    if (!token) throw new InvalidRequest('token is required');
    // The hint only orders the lookups (§2.1); both kinds are tried either way.
    const lookups = params.get('token_type_hint') === 'access_token' ? [accessToken, refreshToken] : [refreshToken, accessToken];
    for (const lookup of lookups) {
      const sessionId = await lookup(token, client.clientId);
      if (sessionId === undefined) continue;
      await endSession(sessionId);
      logger.info({ msg: 'token revoked: session ended', sid: sessionTag(sessionId), client: client.clientId.slice(0, 64) });
      break;
    }
    ctx.res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 0 });
    ctx.res.end();
  }

  /** The session of a refresh token issued to `clientId` (a token is only revoked by its own client, §2.1). */
  async function refreshToken(token: string, clientId: string): Promise<string | undefined> {
    const record = await stores.refreshTokens.peek(token);
    return record?.clientId === clientId ? record.sessionId : undefined;
  }

  async function accessToken(token: string, clientId: string): Promise<string | undefined> {
    // Only something shaped like a JWS is worth a signature check.
    if (token.split('.').length !== 3) return undefined;
    const claims = await ours(token);
    return claims?.client_id === clientId ? claims.sid : undefined;
  }

  /** The caller of a logout: a valid access token of ours whose session is still live. */
  async function bearer(headers: IncomingHttpHeaders): Promise<AccessTokenClaims> {
    const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(headers.authorization ?? '');
    if (!match) throw new InvalidToken('an access token is required', { headers: { 'www-authenticate': 'Bearer' } });
    const claims = await ours(match[1]!);
    if (!claims || !(await stores.sessions.get(claims.sid))) {
      throw new InvalidToken('the access token is invalid', { headers: { 'www-authenticate': 'Bearer error="invalid_token"' } });
    }
    return claims;
  }

  async function logout(ctx: RequestContext): Promise<void> {
    const claims = await bearer(ctx.req.headers);
    await endSession(claims.sid);
    logger.info({ msg: 'logout: session ended', sid: sessionTag(claims.sid) });
    noContent(ctx);
  }

  async function logoutEverywhere(ctx: RequestContext): Promise<void> {
    const claims = await bearer(ctx.req.headers);
    const sessionIds = await stores.sessions.listForUser(claims.sub);
    // The caller's own session is ended even if the index lost it.
    for (const sessionId of new Set([...sessionIds, claims.sid])) await endSession(sessionId);
    logger.info({ msg: 'logout everywhere: sessions ended', sid: sessionTag(claims.sid), sessions: sessionIds.length });
    noContent(ctx);
  }


  const base = options.basePath;
  return [
    { method: 'POST', path: `${base}/oauth/revoke`, handler: revoke, name: '/oauth/revoke' },
    { method: 'OPTIONS', path: `${base}/oauth/revoke`, handler: answerOAuthPreflight, name: '/oauth/revoke' },
    { method: 'POST', path: `${base}/oauth/logout`, handler: logout, name: '/oauth/logout' },
    { method: 'POST', path: `${base}/oauth/logout/all`, handler: logoutEverywhere, name: '/oauth/logout/all' },
  ];
}

function noContent(ctx: RequestContext): void {
  ctx.res.writeHead(204, { 'cache-control': 'no-store' });
  ctx.res.end();
}
