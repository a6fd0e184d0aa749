/**
 * `GET /oauth/callback`: the company IdP's answer. Takes the parked request
 * atomically (a replayed callback finds nothing), exchanges the IdP's code and validates its ID
 * token (openid-client: issuer, audience, nonce, PKCE), creates a session (`sid`) holding the
 * IdP's tokens, sets our login cookie, and then either issues our code to the client or, when
 * this user has not approved this client yet, shows the consent page.
 *
 * Until the consent is given the session is provisional: it lives only as long as the consent
 * page, so an abandoned page leaves nothing behind for long.
 */
import { randomBytes } from 'node:crypto';
import { AccessDenied, Forbidden, InvalidRequest } from '../../http/errors.ts';
import type { Handler } from '../../http/router.ts';
import { describeCause } from '../../http/server.ts';
import { IdpAccountRefused, IdpError, type IdpLoginResult } from '../../idp/types.ts';
import { sendAuthorizationError, type AuthorizationErrorCode } from './authorization-response.ts';
import { finishAuthorization } from './connect-chain.ts';
import { hasConsent, sendConsentPage } from './consent.ts';
import { idpRoundTrip, loginCookie } from './cookies.ts';
import { withHtmlErrors } from './html.ts';
import type { LoginFlow } from './types.ts';
import { finishSignIn, isSignInState } from './sign-in.ts';
import type { ClientRecord } from '../records/records.ts';
import { sessionTag } from '../../observability/logger.ts';

/** IdP errors that mean "the user did not sign in" (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6). */
const USER_DECLINED = new Set(['access_denied', 'login_required', 'consent_required', 'interaction_required', 'account_selection_required']);

/** Creates the handler of `GET /oauth/callback`. */
export function createCallbackEndpoint(flow: LoginFlow): Handler {
  const login = loginCookie(flow.cookies);
  const roundTrip = idpRoundTrip(flow.cookies, flow.pendingTtlMs);

  return withHtmlErrors(flow.logger, async function callback(ctx) {
    const params = ctx.url.searchParams;
    const state = params.get('state');
    if (!state) throw new InvalidRequest('The identity provider answered without the state of a sign-in.');
    // Login CSRF: a callback URL is accepted only in the browser that started its sign-in, checked
    // before the parked request is taken (a stranger's browser must not burn the user's sign-in).
    if (!roundTrip.startedHere(ctx.req, state)) {
      ctx.log.error = 'foreign_callback';
      throw new Forbidden(
        'This sign-in was not started in this browser, so it was not completed. If you did not just sign in yourself, someone may have sent you this link: close this page. Otherwise start the sign-in again from your application, in this browser.',
      );
    }
    // A browser-only sign-in (`/oauth/login`): our login cookie and back, no session, no code.
    if (isSignInState(state)) return finishSignIn(flow, ctx, state);
    const pending = await flow.stores.pending.take(state);
    if (!pending || pending.subject !== undefined) {
      throw new InvalidRequest('This sign-in has expired or was already completed.');
    }
    ctx.log.clientId = pending.clientId;
    const to = { redirectUri: pending.redirectUri, state: pending.clientState, issuer: flow.issuer };

    const idpError = params.get('error');
    if (idpError !== null) {
      ctx.log.error = 'idp_error';
      const code: AuthorizationErrorCode = USER_DECLINED.has(idpError)
        ? 'access_denied'
        : idpError === 'temporarily_unavailable' || idpError === 'server_error'
          ? 'temporarily_unavailable'
          : 'server_error';
      return sendAuthorizationError(ctx.res, to, code, 'the sign-in at the identity provider was not completed');
    }

    let result: IdpLoginResult;
    try {
      result = await flow.idp.finishLogin(ctx.url, { state, codeVerifier: pending.idpCodeVerifier, nonce: pending.idpNonce });
    } catch (error) {
      if (!(error instanceof IdpError)) throw error;
      // The user must act at the IdP, not the agent: a page says what to do.
      if (error instanceof IdpAccountRefused) throw new AccessDenied(error.message, { cause: error });
      ctx.log.error = `idp_${error.kind}`;
      flow.logger.warn({ msg: 'identity provider login failed', reqId: ctx.requestId, kind: error.kind, oauthError: error.oauthError, failure: describeCause(error) });
      return error.kind === 'unavailable'
        ? sendAuthorizationError(ctx.res, to, 'temporarily_unavailable', 'the identity provider cannot be reached; try again shortly')
        : sendAuthorizationError(ctx.res, to, 'access_denied', 'the identity provider did not confirm the sign-in');
    }

    const subject = result.subject;
    const client = await flow.clients(pending.clientId, ctx.signal);
    if (!client) return sendAuthorizationError(ctx.res, to, 'unauthorized_client', 'the client registration expired during the sign-in');
    await markFirstUse(flow, client);
    const consented = await hasConsent(flow, ctx.req, subject, client.clientId, pending.scopes);

    const now = flow.now();
    const sessionId = randomBytes(32).toString('base64url');
    const lifetime = consented ? flow.sessionTtlMs : flow.pendingTtlMs;
    // The IdP's `sub` is kept only when it says something `subject` does not (log.user: sub).
    const idpSub = typeof result.claims['sub'] === 'string' && result.claims['sub'] !== subject ? result.claims['sub'].slice(0, 256) : undefined;
    await flow.stores.sessions.put({ sessionId, subject, ...(idpSub === undefined ? {} : { idpSubject: idpSub }), clientId: client.clientId, createdAt: now, expiresAt: now + lifetime });
    await flow.stores.idpTokens.put(sessionId, result.tokens, lifetime);
    await endSessionsOverCap(flow, subject, sessionId);
    const cookies = [login.issue({ sub: subject, sid: sessionId })];

    if (consented) {
      ctx.log.consent = 'remembered';
      return finishAuthorization(flow, ctx.res, pending, { subject, sessionId }, cookies);
    }
    const consentId = randomBytes(32).toString('base64url');
    await flow.stores.pending.put(consentId, { ...pending, subject, sessionId }, flow.pendingTtlMs);
    ctx.log.consent = 'asked';
    sendConsentPage(flow, ctx, { client, pending, consentId, userLabel: userLabel(subject, result.claims), setCookie: cookies });
  });
}

/**
 * A registration's first use: a user signed in at the IdP for it. From now on it lives the idle
 * period instead of the few minutes an unused registration gets (register.ts).
 */
async function markFirstUse(flow: LoginFlow, client: ClientRecord): Promise<void> {
  if (client.kind !== 'dcr' || client.lastUsedAt !== undefined) return;
  await flow.stores.clients.put({ ...client, lastUsedAt: flow.now() }, flow.clientIdleTtlMs);
}

/**
 * Keeps a user's live sessions within `maxSessionsPerUser`: the oldest end, through the one
 * session-ending path (their upstream grants are revoked too). Without a cap, every login adds a
 * session, its IdP tokens and an index entry that live for the whole session lifetime.
 * Replicas racing here may each end the same oldest sessions: ending is idempotent.
 */
async function endSessionsOverCap(flow: LoginFlow, subject: string, keep: string): Promise<void> {
  const max = flow.maxSessionsPerUser ?? 20;
  const ids = await flow.stores.sessions.listForUser(subject);
  if (ids.length <= max) return;
  const sessions = (await Promise.all(ids.map((id) => flow.stores.sessions.get(id)))).filter((s) => s !== undefined);
  if (sessions.length <= max) return;
  sessions.sort((a, b) => a.createdAt - b.createdAt || (a.sessionId < b.sessionId ? -1 : 1));
  const end = flow.endSession ?? ((id: string) => flow.stores.sessions.revoke(id));
  for (const session of sessions.slice(0, sessions.length - max)) {
    if (session.sessionId === keep) continue;
    await end(session.sessionId);
    flow.logger.info({ msg: 'session limit per user reached: oldest session ended', sid: sessionTag(session.sessionId) });
  }
}

/** A name to greet the user with: "Name (e-mail)", whichever the ID token has, else the subject. */
function userLabel(subject: string, claims: Record<string, unknown>): string {
  const name = typeof claims['name'] === 'string' ? claims['name'] : undefined;
  const email = typeof claims['email'] === 'string' ? claims['email'] : undefined;
  if (name && email) return `${name} (${email})`;
  return name ?? email ?? subject;
}
