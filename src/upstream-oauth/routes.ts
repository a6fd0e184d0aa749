/**
 * The HTTP side of the upstream OAuth flow:
 *
 * | method | path                             | who                | what |
 * |--------|----------------------------------|--------------------|------|
 * | GET    | /oauth/upstream/start?flow=…     | browser (cookie)   | same user? then "Connect X to your account?" |
 * | POST   | /oauth/upstream/start            | browser (cookie)   | the confirmation (CSRF token): on to the upstream's authorization endpoint |
 * | GET    | /oauth/upstream/callback         | browser (cookie)   | single-use state, RFC 9207 `iss`, code exchange, "Connected" page |
 * | GET    | /oauth/client-metadata.json      | upstream AS        | our Client ID Metadata Document |
 * | GET    | /connect/{name}                  | browser (cookie)   | "Connect X to your account?" without waiting for a 401 |
 * | POST   | /connect/{name}                  | browser (cookie)   | the confirmation (CSRF token): starts a flow, on to the upstream |
 * | GET    | /connections                     | agent (our bearer) | the upstreams this session is connected to |
 * | DELETE | /connections/{name}              | agent (our bearer) | forget the token, revoke it at the upstream (RFC 7009) |
 *
 * The anti-phishing rule of URL elicitation: the URL an agent hands to a user carries only a
 * flow id; whoever opens it must be signed in to mcpgate as the user the flow belongs to, both
 * when it is opened and when the upstream sends the browser back. Otherwise a user could be
 * lured into connecting their upstream account to someone else's session.
 *
 * Connecting from a browser also needs a click on a page that names the mcpgate account it
 * connects to (a form with a CSRF token, posted back here): a link alone never moves a signed-in
 * browser on to an upstream that may approve silently. The exception is a flow our own
 * `/oauth/authorize` chains (it has `returnTo`): that browser has just signed in and approved.
 * A browser whose login cookie names no session (a sign-in through `/oauth/login`) cannot connect
 * from `/connect/{name}`: nothing tells which of the user's agent sessions is meant.
 */
import type { IncomingMessage } from 'node:http';
import { HttpError, NotFound } from '../http/errors.ts';
import { readForm, refuseCrossSitePost } from '../http/form.ts';
import type { RequestContext, Route } from '../http/router.ts';
import type { FlowPrincipal, OAuthUpstream, UpstreamFlows } from './flow.ts';
import { FlowError, type FlowFailure } from './flow.ts';
import type { ClientRegistration } from './client-registration.ts';
import { sendConfirmPage, sendOnward, sendPage, sendRedirect } from './pages.ts';
import type { UpstreamFlow } from './records.ts';
import type { UpstreamStores } from './stores.ts';

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

/** Sent when a user finished connecting, so the agent's open stream can be told (`notifications/elicitation/complete`). */
export interface ConnectedEvent {
  sessionId: string;
  upstream: string;
  elicitationId: string;
  /** The agent's `Mcp-Session-Id` when the flow started; undefined when there was none. */
  mcpSessionId: string | undefined;
}

/** Dependencies of {@link createUpstreamOAuthRoutes}. */
export interface UpstreamOAuthRoutesOptions {
  flows: UpstreamFlows;
  stores: UpstreamStores;
  registration: ClientRegistration;
  /** The upstreams in mode `oauth`. */
  upstreams: readonly OAuthUpstream[];
  browser: BrowserSession;
  /**
   * Verifies our bearer token on `/connections` (401/403 as on the gateway path): a token for
   * `upstream` when given, else for any upstream of this list.
   */
  authenticate(ctx: RequestContext, upstream?: string): Promise<FlowPrincipal>;
  /** Base path of the public URL ('' or '/prefix'). */
  basePath: string;
  onConnected?(event: ConnectedEvent): void;
}

/** What `createFlow` mints: 24 random bytes, base64url. Anything else is not worth a store lookup. */
const FLOW_ID = /^[A-Za-z0-9_-]{32}$/;

const START_AGAIN = 'Return to your agent and retry: it will give you a new link.';

/** What each callback failure tells the user. */
const FAILURE_PAGES: Record<FlowFailure, { status: number; title: string; hint: string }> = {
  access_denied: { status: 403, title: 'Access not granted', hint: 'Nothing was connected. Your agent will ask again the next time it needs this server.' },
  authorization_error: { status: 502, title: 'Authorization failed', hint: START_AGAIN },
  iss_mismatch: { status: 400, title: 'Authorization refused', hint: START_AGAIN },
  iss_missing: { status: 400, title: 'Authorization refused', hint: START_AGAIN },
  invalid_response: { status: 400, title: 'Authorization failed', hint: START_AGAIN },
  exchange_failed: { status: 502, title: 'Authorization failed', hint: START_AGAIN },
};

/** Builds the routes; see the module comment for the table. */
export function createUpstreamOAuthRoutes(options: UpstreamOAuthRoutesOptions): Route[] {
  const { flows, stores, browser, basePath } = options;
  const byName = new Map(options.upstreams.map((u) => [u.name, u]));

  /** Sends a browser without our login cookie to sign in (and come back), or explains that it must. */
  function signInFirst(ctx: RequestContext): void {
    const returnTo = ctx.url.pathname + ctx.url.search;
    const login = browser.loginUrl?.(returnTo);
    if (login) return sendRedirect(ctx.res, login);
    sendPage(ctx.res, 401, {
      title: 'Sign in to mcpgate first',
      message: 'This browser is not signed in to mcpgate, so it cannot be connected on your behalf.',
      hint: 'Sign in through your agent (or your organisation’s mcpgate sign-in page) in this browser, then open the link again.',
    });
  }

  function wrongUser(ctx: RequestContext): void {
    sendPage(ctx.res, 403, {
      title: 'This link is for another user',
      message: 'The authorization link was created for a different mcpgate user than the one signed in to this browser. Nothing was connected.',
      hint: 'Open links only from your own agent. If you received this link from someone, do not use it.',
    });
  }

  function whichSession(ctx: RequestContext, name: string): void {
    sendPage(ctx.res, 409, {
      title: 'Connect from your agent',
      message: `You are signed in, but this browser did not sign in through your agent, and mcpgate cannot tell which of your agent sessions (if any) to connect to ${name}.`,
      hint: 'Use the link your agent shows when it needs this server, or sign in through your agent in this browser and open this page again.',
    });
  }

  function expired(ctx: RequestContext): void {
    sendPage(ctx.res, 400, { title: 'This link has expired', message: 'The authorization link has expired or was already used.', hint: START_AGAIN });
  }

  /** The flow a start link or its confirmation names, when it still exists. */
  async function flowNamed(flowId: string | undefined | null): Promise<UpstreamFlow | undefined> {
    return flowId && FLOW_ID.test(flowId) ? stores.flows.get(flowId) : undefined;
  }

  async function start(ctx: RequestContext): Promise<void> {
    const flow = await flowNamed(ctx.url.searchParams.get('flow'));
    if (!flow) return expired(ctx);
    const who = browser.current(ctx.req);
    if (!who) return signInFirst(ctx);
    if (who.subject !== flow.subject) return wrongUser(ctx);
    ctx.log.upstream = flow.upstream;
    // Chained by our own authorization in this browser, which the user has just signed in to and approved.
    if (flow.returnTo) return sendRedirect(ctx.res, flows.authorizationUrl(flow), 302);
    confirm(ctx, { upstream: flow.upstream, subject: who.subject, action: `${ctx.url.origin}${basePath}/oauth/upstream/start`, fields: { flow: flow.flowId }, bind: ['upstream-start', flow.flowId] });
  }

  async function confirmStart(ctx: RequestContext): Promise<void> {
    const form = await confirmation(ctx, (f) => ['upstream-start', f.get('flow') ?? '']);
    if (!form) return;
    const flow = await flowNamed(form.get('flow'));
    if (!flow) return expired(ctx);
    const who = browser.current(ctx.req);
    if (!who) return signInFirst(ctx);
    if (who.subject !== flow.subject) return wrongUser(ctx);
    ctx.log.upstream = flow.upstream;
    sendOnward(ctx.res, { url: flows.authorizationUrl(flow), upstream: flow.upstream });
  }

  /** The "Connect X to your account?" page: one button, a form posted back to `action` with a CSRF token bound to `bind`. */
  function confirm(ctx: RequestContext, page: { upstream: string; subject: string; action: string; fields: Record<string, string>; bind: FormBinding }): void {
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
  async function confirmation(ctx: RequestContext, bind: (form: Map<string, string>) => FormBinding | undefined): Promise<Map<string, string> | undefined> {
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

  async function callback(ctx: RequestContext): Promise<void> {
    const params = ctx.url.searchParams;
    const state = params.get('state');
    if (!state) {
      return sendPage(ctx.res, 400, { title: 'Invalid authorization response', message: 'The response has no state parameter.', hint: START_AGAIN });
    }
    const flow = await stores.flows.byState(state);
    if (!flow) return expired(ctx);
    ctx.log.upstream = flow.upstream;
    // Checked before the state is consumed, so a stranger's browser cannot burn the user's flow.
    const who = browser.current(ctx.req);
    if (!who) return signInFirst(ctx);
    if (who.subject !== flow.subject) return wrongUser(ctx);
    if (!(await stores.flows.take(flow))) return expired(ctx);

    try {
      await flows.complete(flow, params, ctx.signal);
    } catch (err) {
      if (!(err instanceof FlowError)) throw err;
      ctx.log.flowError = err.failure;
      // A chained authorization (our /oauth/authorize) goes on without this connection: it decides what the agent gets.
      if (flow.returnTo) return sendRedirect(ctx.res, flow.returnTo);
      const page = FAILURE_PAGES[err.failure];
      return sendPage(ctx.res, page.status, { title: page.title, message: err.message, hint: page.hint });
    }
    notifyConnected(flow);
    if (flow.returnTo) return sendRedirect(ctx.res, flow.returnTo);
    sendPage(ctx.res, 200, {
      title: `Connected to ${flow.upstream}`,
      message: `mcpgate can now use ${flow.upstream} on your behalf. Return to your agent and retry.`,
      hint: 'You can close this window.',
    });
  }

  function notifyConnected(flow: UpstreamFlow): void {
    try {
      options.onConnected?.({ sessionId: flow.sessionId, upstream: flow.upstream, elicitationId: flow.elicitationId, mcpSessionId: flow.mcpSessionId });
    } catch {
      // A notification is a courtesy: the user is connected whatever happens to it.
    }
  }

  function clientMetadata(ctx: RequestContext): void {
    const body = JSON.stringify(options.registration.metadataDocument());
    ctx.res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      // Authorization servers cache it (CIMD draft §4.3); it changes only with the public URL.
      'cache-control': 'public, max-age=3600',
    });
    ctx.res.end(body);
  }

  /** The upstream `/connect/{name}` names, and the session this browser signed in with (pages answer otherwise). */
  async function connectTarget(ctx: RequestContext): Promise<{ upstream: OAuthUpstream; subject: string; sessionId: string } | undefined> {
    const upstream = byName.get(ctx.params.name!);
    if (!upstream) {
      sendPage(ctx.res, 404, { title: 'Unknown server', message: 'No server with that name is connected through its own authorization.' });
      return undefined;
    }
    ctx.log.upstream = upstream.name;
    const who = browser.current(ctx.req);
    if (!who) {
      signInFirst(ctx);
      return undefined;
    }
    // Only the session this browser signed in with: never one picked for it (see the module comment).
    if (who.sessionId === undefined) {
      whichSession(ctx, upstream.name);
      return undefined;
    }
    return { upstream, subject: who.subject, sessionId: who.sessionId };
  }

  async function connect(ctx: RequestContext): Promise<void> {
    const target = await connectTarget(ctx);
    if (!target) return;
    const { upstream, subject, sessionId } = target;
    confirm(ctx, { upstream: upstream.name, subject, action: `${ctx.url.origin}${basePath}/connect/${upstream.name}`, fields: {}, bind: ['connect', upstream.name, sessionId] });
  }

  async function confirmConnect(ctx: RequestContext): Promise<void> {
    const target = await connectTarget(ctx);
    if (!target) return;
    const { upstream, subject, sessionId } = target;
    if (!(await confirmation(ctx, () => ['connect', upstream.name, sessionId]))) return;
    let flowId: string;
    try {
      flowId = (await flows.startFlow({ principal: { subject, sessionId }, upstream })).flowId;
    } catch (err) {
      // A browser gets a page, not JSON: discovery and registration errors are ours to word (502).
      if (!(err instanceof HttpError) || err.status !== 502) throw err;
      return sendPage(ctx.res, 502, { title: `Cannot connect to ${upstream.name}`, message: err.message, hint: 'Tell your administrator if this keeps happening.' });
    }
    const flow = await flowNamed(flowId);
    if (!flow) return expired(ctx);
    sendOnward(ctx.res, { url: flows.authorizationUrl(flow), upstream: upstream.name });
  }

  async function list(ctx: RequestContext): Promise<void> {
    const principal = await options.authenticate(ctx);
    const connected = new Set(await stores.tokens.list(principal.sessionId));
    const body = JSON.stringify({
      connections: options.upstreams.map((u) => ({ upstream: u.name, connected: connected.has(u.name), connect_url: `${ctx.url.origin}${basePath}/connect/${u.name}` })),
    });
    ctx.res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    ctx.res.end(body);
  }

  async function disconnect(ctx: RequestContext): Promise<void> {
    const upstream = byName.get(ctx.params.name!);
    if (!upstream) throw new NotFound(`no upstream named "${ctx.params.name}" uses its own authorization`);
    ctx.log.upstream = upstream.name;
    const principal = await options.authenticate(ctx, upstream.name);
    const result = await flows.disconnect(principal.sessionId, upstream.name);
    const body = JSON.stringify({ upstream: upstream.name, disconnected: result.connected, revoked: result.revoked });
    ctx.res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    ctx.res.end(body);
  }

  return [
    { method: 'GET', path: `${basePath}/oauth/upstream/start`, handler: start },
    { method: 'POST', path: `${basePath}/oauth/upstream/start`, handler: confirmStart },
    { method: 'GET', path: `${basePath}/oauth/upstream/callback`, handler: callback },
    { method: 'GET', path: `${basePath}/oauth/client-metadata.json`, handler: clientMetadata },
    { method: 'GET', path: `${basePath}/connect/:name`, handler: connect, name: '/connect/{name}' },
    { method: 'POST', path: `${basePath}/connect/:name`, handler: confirmConnect, name: '/connect/{name}' },
    { method: 'GET', path: `${basePath}/connections`, handler: list },
    { method: 'DELETE', path: `${basePath}/connections/:name`, handler: disconnect, name: '/connections/{name}' },
  ];
}
