/**
 * Sign in and come back (an upstream connect link needs "our login cookie, or a fresh login through our IdP"):
 *
 *   GET /oauth/login?return_to=<a path of ours>   park the return path, send the browser to the IdP
 *   GET /oauth/callback (state `si.…`)            the IdP's answer: set our login cookie, go back
 *
 * For the browser legs that must know who is at the browser (an upstream connect link opened in a
 * browser that never signed in to mcpgate, or whose login cookie has expired). It proves the user
 * and nothing more: no session, no code, and the IdP's tokens are not kept. The cookie it sets
 * names the user only (no `sid`); every leg that needs a session still takes it from its own
 * record (the upstream flow) and only compares the user.
 *
 * `return_to` is an open-redirect risk, so only a path under our public URL is accepted: it
 * starts with one `/` (not `//`, which browsers read as another host), has no backslash (which
 * some browsers read as `/`), no control or space characters, and resolves to our own origin.
 */
import { AccessDenied, InvalidRequest, TemporarilyUnavailable } from '../../http/errors.ts';
import type { Handler, RequestContext } from '../../http/router.ts';
import { describeCause } from '../../http/server.ts';
import { IdpAccountRefused, IdpError, type IdpLoginResult } from '../../idp/types.ts';
import { idpRoundTrip, loginCookie } from './cookies.ts';
import { withHtmlErrors } from './html.ts';
import type { LoginFlow } from './types.ts';

/** Our state towards the IdP for a sign-in starts with this, so the callback knows which record to take. */
const SIGN_IN_STATE_PREFIX = 'si.';
/** Longest `return_to` accepted, in characters (a connect link with its query fits easily). */
const MAX_RETURN_TO = 2048;
/** A path: one leading `/`, then no second `/` or `\` right after it, and nothing but visible ASCII without `\`. */
const RETURN_PATH = /^\/(?![/\\])[\x21-\x5b\x5d-\x7e]*$/;

/** True for the state of a sign-in (as opposed to an authorization request's). */
export function isSignInState(state: string): boolean {
  return state.startsWith(SIGN_IN_STATE_PREFIX);
}

/**
 * The `return_to` path if it is one of ours (see the module comment), else undefined.
 * `issuer` is our public URL: the path must lie under its path and resolve to its origin.
 */
export function ourReturnPath(returnTo: string | null, issuer: string): string | undefined {
  if (returnTo === null || returnTo.length > MAX_RETURN_TO || !RETURN_PATH.test(returnTo)) return undefined;
  const base = new URL(issuer);
  const basePath = base.pathname.replace(/\/+$/, '');
  if (basePath !== '' && returnTo !== basePath && !returnTo.startsWith(`${basePath}/`) && !returnTo.startsWith(`${basePath}?`)) return undefined;
  const resolved = new URL(returnTo, base.origin);
  if (resolved.origin !== base.origin) return undefined;
  // Back to the sign-in itself would only loop.
  if (resolved.pathname === `${basePath}/oauth/login`) return undefined;
  return returnTo;
}

/** The URL that signs a browser in and returns it to `returnTo` (a path of ours). */
export function signInUrl(issuer: string, returnTo: string): string {
  return `${issuer.replace(/\/+$/, '')}/oauth/login?${new URLSearchParams({ return_to: returnTo })}`;
}

/** Creates the handler of `GET /oauth/login`. */
export function createSignInEndpoint(flow: LoginFlow): Handler {
  return withHtmlErrors(flow.logger, async function signIn(ctx) {
    const params = ctx.url.searchParams;
    if (params.getAll('return_to').length > 1) throw new InvalidRequest('The sign-in link repeats return_to.');
    const returnTo = ourReturnPath(params.get('return_to'), flow.issuer);
    if (!returnTo) throw new InvalidRequest('The sign-in link does not say where to return, or names a place outside this service.');
    // Bound to this browser (cookies.ts idpRoundTrip): the callback refuses it from any other.
    const { state, setCookie } = idpRoundTrip(flow.cookies, flow.pendingTtlMs).start(ctx.req, SIGN_IN_STATE_PREFIX);
    let login;
    try {
      login = await flow.idp.startLogin(state);
    } catch (error) {
      throw idpUnavailable(flow, ctx, error);
    }
    await flow.stores.signIns.put(state, { returnTo, idpCodeVerifier: login.codeVerifier, idpNonce: login.nonce, createdAt: flow.now() }, flow.pendingTtlMs);
    ctx.log.signIn = 'started';
    ctx.res.writeHead(302, { location: login.url, 'set-cookie': [setCookie], 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' });
    ctx.res.end();
  });
}

/**
 * The IdP callback of a sign-in (called by `/oauth/callback` for a `si.` state, inside its HTML
 * error handling): takes the parked sign-in atomically, finishes the login (openid-client checks
 * state, PKCE, the ID token's issuer, audience and nonce), sets our login cookie naming the user,
 * and sends the browser back.
 */
export async function finishSignIn(flow: LoginFlow, ctx: RequestContext, state: string): Promise<void> {
  const pending = await flow.stores.signIns.take(state);
  if (!pending) throw new InvalidRequest('This sign-in has expired or was already completed. Open the link again.');
  if (ctx.url.searchParams.get('error') !== null) {
    ctx.log.error = 'idp_error';
    throw new AccessDenied('The sign-in at the identity provider was not completed.');
  }
  let result: IdpLoginResult;
  try {
    result = await flow.idp.finishLogin(ctx.url, { state, codeVerifier: pending.idpCodeVerifier, nonce: pending.idpNonce });
  } catch (error) {
    if (error instanceof IdpAccountRefused) throw new AccessDenied(error.message, { cause: error });
    if (error instanceof IdpError && error.kind === 'rejected') {
      ctx.log.error = 'idp_rejected';
      flow.logger.warn({ msg: 'identity provider sign-in failed', reqId: ctx.requestId, oauthError: error.oauthError, failure: describeCause(error) });
      throw new AccessDenied('The identity provider did not confirm the sign-in.');
    }
    throw idpUnavailable(flow, ctx, error);
  }
  // The IdP's tokens are not kept: this sign-in vouches for the browser, it is no session.
  const cookie = loginCookie(flow.cookies).issue({ sub: result.subject });
  ctx.log.signIn = 'completed';
  ctx.res.writeHead(303, {
    location: new URL(pending.returnTo, new URL(flow.issuer).origin).href,
    'set-cookie': [cookie],
    'cache-control': 'no-store',
    'referrer-policy': 'no-referrer',
  });
  ctx.res.end();
}

function idpUnavailable(flow: LoginFlow, ctx: RequestContext, error: unknown): unknown {
  if (!(error instanceof IdpError)) return error;
  ctx.log.error = `idp_${error.kind}`;
  flow.logger.warn({ msg: 'identity provider unavailable', reqId: ctx.requestId, failure: describeCause(error) });
  return new TemporarilyUnavailable('The identity provider cannot be reached; try again shortly.', { headers: { 'retry-after': '5' }, cause: error });
}
