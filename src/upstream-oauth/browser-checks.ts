/**
 * Who is at the browser, and the pages that answer when it is not the right user, or not yet
 * anybody: the checks every connect page and the callback run before they act, and the
 * confirmation step (a page naming the mcpgate account, a form with a CSRF token posted back).
 * See `routes.ts` for why connecting needs both.
 */
import type { IncomingMessage } from 'node:http';
import { HttpError } from '../http/errors.ts';
import { readForm, refuseCrossSitePost } from '../http/form.ts';
import type { RequestContext } from '../http/router.ts';
import { sendConfirmPage, sendPage, sendRedirect } from './pages.ts';

/** Who is at the browser, according to our login cookie. */
export interface BrowserSession {
  /**
   * The user and the session our login cookie names; undefined when absent, forged or expired.
   * `sessionId` is absent after a browser-only sign-in (it proves the user, and creates no session).
   */
  current(req: IncomingMessage): { subject: string; sessionId?: string } | undefined;
  /**
   * A URL that signs the browser in through the IdP and then returns to `returnTo` (a path under
   * our public URL). Undefined when no such login is offered: a "sign in first" page is shown.
   */
  loginUrl?(returnTo: string): string | undefined;
  /**
   * The CSRF token of a form acting on `parts` (see `formTokens` of our cookies), and the cookie to
   * set with the page that holds it.
   */
  formToken(req: IncomingMessage, ...bind: FormBinding): { token: string; setCookie: string };
  /** True when `token` was issued by {@link formToken} to this browser for the same binding. */
  checkFormToken(req: IncomingMessage, token: string, ...bind: FormBinding): boolean;
}

/** What a form token is bound to: a purpose, then the values the form acts on. */
export type FormBinding = [purpose: string, ...parts: string[]];

/** The hint of every page after which only a new link from the agent helps. */
export const START_AGAIN = 'Return to your agent and retry: it will give you a new link.';

/**
 * The signed-in user when it is `subject` (the user a flow belongs to); otherwise answers (sign in
 * first, or "this link is for another user") and returns undefined.
 */
export function flowUser(browser: BrowserSession, ctx: RequestContext, subject: string): { subject: string; sessionId?: string } | undefined {
  const who = browser.current(ctx.req);
  if (!who) {
    signInFirst(browser, ctx);
    return undefined;
  }
  if (who.subject !== subject) {
    wrongUser(ctx);
    return undefined;
  }
  return who;
}

/** Sends a browser without our login cookie to sign in (and come back), or explains that it must. */
export function signInFirst(browser: BrowserSession, ctx: RequestContext): void {
  const returnTo = ctx.url.pathname + ctx.url.search;
  const login = browser.loginUrl?.(returnTo);
  if (login) return sendRedirect(ctx.res, login);
  sendPage(ctx.res, 401, {
    title: 'Sign in to mcpgate first',
    message: 'This browser is not signed in to mcpgate, so it cannot be connected on your behalf.',
    hint: 'Sign in through your agent (or your organisation’s mcpgate sign-in page) in this browser, then open the link again.',
  });
}

/** The page for a browser signed in as another user than the one a link was made for. */
export function wrongUser(ctx: RequestContext): void {
  sendPage(ctx.res, 403, {
    title: 'This link is for another user',
    message: 'The authorization link was created for a different mcpgate user than the one signed in to this browser. Nothing was connected.',
    hint: 'Open links only from your own agent. If you received this link from someone, do not use it.',
  });
}

/** The page for a browser signed in without a session (a browser-only sign-in): which agent session to connect is unknown. */
export function whichSession(ctx: RequestContext, name: string): void {
  sendPage(ctx.res, 409, {
    title: 'Connect from your agent',
    message: `You are signed in, but this browser did not sign in through your agent, and mcpgate cannot tell which of your agent sessions (if any) to connect to ${name}.`,
    hint: 'Use the link your agent shows when it needs this server, or sign in through your agent in this browser and open this page again.',
  });
}

/** The page for a flow that is gone: expired, or already used. */
export function expired(ctx: RequestContext): void {
  sendPage(ctx.res, 400, { title: 'This link has expired', message: 'The authorization link has expired or was already used.', hint: START_AGAIN });
}

/** The "Connect X to your account?" page: one button, a form posted back to `action` with a CSRF token bound to `bind`. */
export function confirmPage(
  browser: BrowserSession,
  ctx: RequestContext,
  page: { upstream: string; subject: string; action: string; fields: Record<string, string>; bind: FormBinding },
): void {
  const { token, setCookie } = browser.formToken(ctx.req, ...page.bind);
  sendConfirmPage(ctx.res, {
    title: `Connect ${page.upstream} to your mcpgate account?`,
    message: `You are signed in to mcpgate as ${page.subject}. Continuing lets mcpgate use your ${page.upstream} account on behalf of that mcpgate account, for the agent session that asked for it.`,
    hint: `If ${page.subject} is not you, or you did not just ask your agent to use ${page.upstream}, close this page: someone may have sent you this link.`,
    action: page.action,
    fields: { ...page.fields, csrf: token },
    button: `Connect ${page.upstream}`,
    setCookie: [setCookie],
  });
}

/**
 * The confirmation form, when it came from our page in this browser: a post another site made
 * the browser send, an unreadable form or a token not issued here for `bind(form)` get a page.
 */
export async function confirmation(
  browser: BrowserSession,
  ctx: RequestContext,
  bind: (form: Map<string, string>) => FormBinding | undefined,
): Promise<Map<string, string> | undefined> {
  let form: Map<string, string>;
  try {
    refuseCrossSitePost(ctx.req, ctx.url.origin);
    form = await readForm(ctx.req, 8 * 1024);
  } catch (error) {
    if (!(error instanceof HttpError) || error.status >= 500) throw error;
    ctx.log.error = 'bad_confirmation';
    sendPage(ctx.res, error.status === 403 ? 403 : 400, { title: 'Not connected', message: 'This confirmation was sent from another site, or could not be read. Nothing was connected.', hint: 'Open the link again.' });
    return undefined;
  }
  const parts = bind(form);
  if (!parts || !browser.checkFormToken(ctx.req, form.get('csrf') ?? '', ...parts)) {
    ctx.log.error = 'bad_confirmation';
    sendPage(ctx.res, 403, {
      title: 'Not connected',
      message: 'This confirmation did not come from the page mcpgate showed in this browser, or it has expired. Nothing was connected.',
      hint: 'Open the link again.',
    });
    return undefined;
  }
  return form;
}
