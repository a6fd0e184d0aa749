/**
 * `POST /oauth/token` (RFC 6749 §3.2, OAuth 2.1 §3.2): the `authorization_code` grant with PKCE
 * (RFC 7636) and resource binding (RFC 8707), and the `refresh_token` grant with rotation
 * (OAuth 2.1 §4.3.1). A reused code or refresh token revokes the whole session (token family),
 * except the immediately previous refresh token presented again by its client within a short
 * grace (`reuseGraceMs`): refused, without revoking anything. A refresh also ends a session past
 * its absolute lifetime, and one the company IdP no longer backs (checked once the IdP access
 * token has expired), so a user disabled at the IdP loses access within one IdP access-token
 * lifetime plus one of ours.
 * Every failure is an RFC 6749 §5.2 error carried by the thrown HttpError.
 */
import type { Logger } from '../../observability/logger.ts';
import { sessionTag } from '../../observability/logger.ts';
import { InvalidGrant, InvalidRequest, InvalidScope, InvalidTarget, TemporarilyUnavailable, UnauthorizedClient, UnsupportedGrantType } from '../../http/errors.ts';
import { IdpSessionEnded, type IdpSessionTokens } from '../../credentials/idp-session.ts';
import { IdpError } from '../../idp/types.ts';
import type { RequestContext, Route } from '../../http/router.ts';
import { authenticateClient, type ClientResolver } from './client-auth.ts';
import { readForm } from '../../http/form.ts';
import type { AuthStores, ClientRecord, RefreshTokenRecord, SessionRecord } from '../records/records.ts';
import { isPkceVerifier, newRefreshToken, pkceChallenge, safeEqual, type TokenIssuer } from './mint.ts';
import type { StepUpMarks } from './step-up.ts';
import type { EndSession } from '../records/session-end.ts';
import { answerOAuthPreflight } from '../../http/cors.ts';

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
  /** The refresh token to issue, when it was chosen before (a rotation records its successor). */
  refreshToken?: string;
}

/** The route of the token endpoint (plus its CORS preflight: browser-based agents call it directly). */
export function createTokenRoutes(options: TokenEndpointOptions): Route[] {
  const { stores, logger, endSession } = options;
  if (typeof endSession !== 'function') throw new TypeError('endSession must be a function');
  const now = options.now ?? Date.now;
  const resolveClient = options.resolveClient ?? ((id: string) => stores.clients.get(id));
  if (!Number.isSafeInteger(options.refreshTokenTtlMs) || options.refreshTokenTtlMs <= 0) throw new TypeError('refreshTokenTtlMs must be a positive integer');
  const reuseGraceMs = options.reuseGraceMs ?? 30_000;
  if (!Number.isSafeInteger(reuseGraceMs) || reuseGraceMs < 0) throw new TypeError('reuseGraceMs must be a non-negative integer');
  const sessionMaxLifetimeMs = options.sessionMaxLifetimeMs ?? 7 * 86_400_000;
  if (!Number.isSafeInteger(sessionMaxLifetimeMs) || sessionMaxLifetimeMs <= 0) throw new TypeError('sessionMaxLifetimeMs must be a positive integer');

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
    // Before rotation too: a refused or unanswered check leaves the refresh token unspent. A token
    // already rotated is a reuse, found below; the IdP is not asked on its behalf.
    const live = peeked.rotatedAt === undefined ? await confirmSession(peeked.sessionId) : undefined;

    const successor = newRefreshToken();
    const rotated = await stores.refreshTokens.rotate(presented, successor);
    if (!rotated) throw new InvalidGrant('the refresh token is invalid or expired');
    if (rotated.reused && rotated.successorUnused && now() - (rotated.record.rotatedAt ?? 0) <= reuseGraceMs) {
      // The same client presenting the token it just rotated, whose successor nobody has used
      // yet: one agent's two concurrent refreshes (the other one already got the new pair). A
      // thief gains nothing here either (no tokens are issued), and any later or older reuse
      // still revokes the family.
      logger.info({ msg: 'refresh token presented again within the reuse grace: refused, session kept', sid: sessionTag(rotated.record.sessionId) });
      throw new InvalidGrant('the refresh token was already used; use the refresh token issued in its place');
    }
    if (rotated.reused) {
      // OAuth 2.1 §4.3.1: a rotated token presented again means one of the two holders is an attacker.
      await endSession(rotated.record.sessionId);
      logger.warn({ msg: 'refresh token reused: session revoked', sid: sessionTag(rotated.record.sessionId) });
      throw new InvalidGrant('the refresh token was already used');
    }
    const record = rotated.record;
    // Slides, but never past the session's absolute end.
    const until = Math.min(now() + options.refreshTokenTtlMs, (live?.createdAt ?? now()) + sessionMaxLifetimeMs);
    const session = await stores.sessions.extend(record.sessionId, until);
    if (!session) throw new InvalidGrant('the session has ended');
    return {
      client,
      subject: record.subject,
      sessionId: record.sessionId,
      resource: record.resource,
      scopes: requestedScopes,
      grantedScopes: record.scopes,
      sessionExpiresAt: session.expiresAt,
      refreshToken: successor,
    };
  }

  /**
   * The checks a refresh makes on the session itself: its absolute lifetime, then the company
   * IdP's word once the IdP access token has expired. Undefined when the session is gone (the
   * rotation then reports the token as invalid).
   */
  async function confirmSession(sessionId: string): Promise<SessionRecord | undefined> {
    const session = await stores.sessions.get(sessionId);
    if (!session) return undefined;
    if (now() >= session.createdAt + sessionMaxLifetimeMs) {
      await endSession(sessionId);
      logger.info({ msg: 'session reached its maximum lifetime: ended', sid: sessionTag(sessionId) });
      throw new InvalidGrant('the session reached its maximum lifetime; sign in again');
    }
    if (!options.idpSession) return session;
    try {
      // Refreshes the IdP grant only when its access token has expired: a user disabled at the
      // IdP is then refused there (invalid_grant), and `current` ends the session.
      await options.idpSession.current(sessionId, (tokens) => tokens.expiresAt !== undefined && tokens.expiresAt <= now());
    } catch (error) {
      if (error instanceof IdpSessionEnded) {
        // Already ended when the IdP refused; not when the IdP tokens were simply gone.
        await endSession(sessionId);
        throw new InvalidGrant('the sign-in at the identity provider has ended; sign in again');
      }
      if (error instanceof IdpError) {
        // An outage is never a logout: the session and this refresh token stay for a retry.
        throw new TemporarilyUnavailable('the identity provider cannot confirm the sign-in right now; retry shortly', { headers: { 'retry-after': '5' }, cause: error });
      }
      throw error;
    }
    return session;
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
      const refreshToken = grant.refreshToken ?? newRefreshToken();
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
