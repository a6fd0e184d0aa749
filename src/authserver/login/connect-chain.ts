/**
 * The re-challenge chain (issue 5 "HTTP re-challenge"): an agent that was answered
 * `403 insufficient_scope` with `scope="… mcpgate:connect:<name>"` authorizes again for the larger
 * scope. Before our code is issued for such a request, the browser is taken through the
 * upstream's own authorization server (the upstream OAuth flow's `/oauth/upstream/start`), and
 * comes back to `GET /oauth/authorize/resume`, which issues the code — so when the agent holds
 * its new token, the session behind it is already connected.
 *
 * - A connect scope names one upstream in mode `oauth`; a client may ask for it whatever scope it
 *   registered (it grants nothing but the user's own connection, made by the user in the browser).
 * - Already connected (this session holds a token for the upstream): no detour.
 * - The upstream leg failed or was abandoned and the browser comes back anyway: that connect scope
 *   is left out of the code, so the agent's next call is challenged again instead of looping.
 * - Several connect scopes: one upstream after the other.
 *
 * The continuation is the parked authorization request (single use, 10 min, sealed like every
 * parked request) under a fresh random id; `resume` takes it only from the browser whose login
 * cookie names the same session.
 */
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { Forbidden, HttpError, InvalidRequest } from '../../http/errors.ts';
import type { Handler } from '../../http/router.ts';
import type { Logger } from '../../observability/logger.ts';
import type { FlowPrincipal, OAuthUpstream, UpstreamFlows } from '../../upstream-oauth/flow.ts';
import { issueAuthorizationCode, sendRedirect, type IssueCodeOptions } from './authorization-response.ts';
import { loginCookie, type CookieCodec } from './cookies.ts';
import { escapeHtml, sendHtml, withHtmlErrors } from './html.ts';
import type { AuthStores, PendingAuthorization } from '../records/records.ts';

/** Options of {@link createConnectChain}. */
export interface ConnectChainOptions {
  /** The upstreams in mode `oauth` (their connect scopes are the ones handled). */
  upstreams: readonly OAuthUpstream[];
  flows: Pick<UpstreamFlows, 'token' | 'startFlow'>;
  stores: Pick<AuthStores, 'pending'>;
  /** Base path of the public URL ('' or '/prefix'): the resume route lives under it. */
  basePath: string;
  /** Lifetime of the continuation, ms (the parked request's, 10 min). */
  pendingTtlMs: number;
  logger: Logger;
}

/** What to do where our code would be issued. */
export type ChainStep = { detour: string; upstream: string } | { pending: PendingAuthorization };

/** See the module comment. */
export interface ConnectChain {
  /** True for `mcpgate:connect:<name>` of an upstream in mode `oauth`. */
  handles(scope: string): boolean;
  /**
   * Decides before our code is issued: a `detour` (the URL to send the browser to first), or the
   * request to issue the code for (connect scopes whose leg failed, named in `tried`, removed).
   */
  next(input: { pending: PendingAuthorization; login: FlowPrincipal; tried?: string }): Promise<ChainStep>;
  /** The path of the resume route. */
  readonly resumePath: string;
}

const CONNECT_SCOPE = /^mcpgate:connect:([a-z0-9][a-z0-9_-]{0,62})$/;

/** Builds the chain; validated here, not at first use. */
export function createConnectChain(options: ConnectChainOptions): ConnectChain {
  const byName = new Map(options.upstreams.map((u) => [u.name, u]));
  const resumePath = `${options.basePath}/oauth/authorize/resume`;
  if (!Number.isSafeInteger(options.pendingTtlMs) || options.pendingTtlMs <= 0) throw new TypeError('pendingTtlMs must be a positive integer');

  const upstreamOf = (scope: string) => {
    const name = CONNECT_SCOPE.exec(scope)?.[1];
    return name === undefined ? undefined : byName.get(name);
  };

  return {
    resumePath,
    handles: (scope) => upstreamOf(scope) !== undefined,
    async next({ pending, login, tried }) {
      let scopes = pending.scopes;
      for (const scope of pending.scopes) {
        const upstream = upstreamOf(scope);
        if (!upstream || (await options.flows.token(login.sessionId, upstream.name))) continue;
        if (upstream.name === tried) {
          // The browser came back without a connection (denied, failed): do not ask again in this round.
          scopes = scopes.filter((s) => s !== scope);
          continue;
        }
        const id = randomBytes(32).toString('base64url');
        const returnTo = `${resumePath}?c=${id}&u=${encodeURIComponent(upstream.name)}`;
        let authUrl: string;
        try {
          authUrl = (await options.flows.startFlow({ principal: login, upstream, returnTo })).authUrl;
        } catch (error) {
          // Discovery or registration at the upstream failed: the agent gets its code without this
          // connect scope, and the gateway path will explain on the next call.
          if (!(error instanceof HttpError)) throw error;
          options.logger.warn({ msg: 'connect chain: cannot start the upstream flow', upstream: upstream.name, err: error.message });
          scopes = scopes.filter((s) => s !== scope);
          continue;
        }
        await options.stores.pending.put(id, { ...pending, scopes, subject: login.subject, sessionId: login.sessionId }, options.pendingTtlMs);
        return { detour: authUrl, upstream: upstream.name };
      }
      return { pending: scopes === pending.scopes ? pending : { ...pending, scopes } };
    },
  };
}

/** What {@link finishAuthorization} needs: the code issuance options and, when configured, the chain. */
export interface FinishOptions extends IssueCodeOptions {
  connect?: ConnectChain;
}

/**
 * Where our authorization code would be issued (the IdP callback, the consent form, the resume
 * route): detours through the upstreams the request asks to connect, else issues the code and
 * redirects the browser to the client.
 */
export async function finishAuthorization(
  flow: FinishOptions,
  res: ServerResponse,
  pending: PendingAuthorization,
  login: FlowPrincipal,
  setCookie: string[] = [],
  tried?: string,
): Promise<void> {
  const step = flow.connect ? await flow.connect.next({ pending, login, tried }) : { pending };
  if ('detour' in step) return sendDetour(res, step, setCookie);
  sendRedirect(res, await issueAuthorizationCode(flow, step.pending, login), setCookie);
}

/**
 * A page that moves the browser on to the upstream's authorization, instead of a redirect: this
 * may answer the consent form, and browsers apply the form's `form-action` to every redirect of
 * its submission — the upstream's authorization server is not among its targets, and cannot be
 * (it is discovered only now). A new navigation starts outside the form's policy.
 */
function sendDetour(res: ServerResponse, step: { detour: string; upstream: string }, setCookie: string[]): void {
  const url = escapeHtml(step.detour);
  const name = escapeHtml(step.upstream);
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="0;url=${url}">
<meta name="robots" content="noindex">
<title>Connecting to ${name}</title>
</head>
<body>
<main>
<h1>Connecting to ${name}</h1>
<p>${name} has its own sign-in. You are being sent there to allow mcpgate to use it for you; you will then return to your application.</p>
<p><a href="${url}">Continue to ${name}</a></p>
</main>
</body>
</html>`;
  sendHtml(res, 200, html, { setCookie });
}

/** `GET /oauth/authorize/resume?c=…&u=…`: back from an upstream's authorization server. */
export function createResumeEndpoint(flow: FinishOptions & { stores: Pick<AuthStores, 'pending'>; cookies: CookieCodec; logger: Logger }): Handler {
  const login = loginCookie(flow.cookies);
  return withHtmlErrors(flow.logger, async function resume(ctx) {
    const id = ctx.url.searchParams.get('c');
    const who = login.read(ctx.req);
    if (!who) throw new Forbidden('This browser is not signed in. Start the sign-in again from your application.');
    const pending = id ? await flow.stores.pending.take(id) : undefined;
    if (!pending || pending.subject === undefined || pending.sessionId === undefined) {
      throw new InvalidRequest('This sign-in has expired or was already completed. Start it again from your application.');
    }
    // The continuation was handed to this user's browser; another browser must not complete it.
    if (who.sid !== pending.sessionId || who.sub !== pending.subject) throw new Forbidden('This sign-in belongs to another browser session.');
    ctx.log.clientId = pending.clientId;
    const tried = ctx.url.searchParams.get('u') ?? undefined;
    await finishAuthorization(flow, ctx.res, pending, { subject: pending.subject, sessionId: pending.sessionId }, [], tried);
  });
}
