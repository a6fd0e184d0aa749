/**
 * `/connect/{name}`: connecting an upstream from a browser without waiting for the agent to hit a
 * 401. `GET` shows "Connect X to your account?"; `POST` (the confirmation) starts a flow for the
 * session this browser signed in with and sends the browser on to the upstream. A browser whose
 * login cookie names no session (a sign-in through `/oauth/login`) cannot connect from here:
 * nothing tells which of the user's agent sessions is meant.
 */
import { HttpError } from '../http/errors.ts';
import type { RequestContext } from '../http/router.ts';
import { confirmation, confirmPage, expired, signInFirst, whichSession, type BrowserSession } from './browser-checks.ts';
import type { OAuthUpstream, UpstreamFlows } from './flow.ts';
import { flowNamed } from './flow-routes.ts';
import { sendOnward, sendPage } from './pages.ts';
import type { UpstreamFlow } from './records.ts';
import type { UpstreamStores } from './stores.ts';

/** What the connect pages need; `createUpstreamOAuthRoutes` builds it once. */
export interface ConnectRoutesDeps {
  flows: Pick<UpstreamFlows, 'startFlow' | 'authorizationUrl'>;
  stores: Pick<UpstreamStores, 'flows'>;
  browser: BrowserSession;
  /** Base path of the public URL ('' or '/prefix'). */
  basePath: string;
  /** The upstreams in mode `oauth`, by name. */
  byName: ReadonlyMap<string, OAuthUpstream>;
}

/** Who connects what: the upstream `/connect/{name}` names, the user, and the session this browser signed in with. */
interface ConnectTarget {
  upstream: OAuthUpstream;
  subject: string;
  sessionId: string;
}

/** `GET /connect/{name}`: the confirmation page, its form bound to the upstream and the session. */
export async function connectPage(deps: ConnectRoutesDeps, ctx: RequestContext): Promise<void> {
  const target = await connectTarget(deps, ctx);
  if (!target) return;
  const { upstream, subject, sessionId } = target;
  confirmPage(deps.browser, ctx, {
    upstream: upstream.name,
    subject,
    action: `${ctx.url.origin}${deps.basePath}/connect/${upstream.name}`,
    fields: {},
    bind: ['connect', upstream.name, sessionId],
  });
}

/** `POST /connect/{name}`: check the target and the confirmation, start a flow, send the browser on to the upstream. */
export async function confirmConnect(deps: ConnectRoutesDeps, ctx: RequestContext): Promise<void> {
  const target = await connectTarget(deps, ctx);
  if (!target) return;
  if (!(await confirmation(deps.browser, ctx, () => ['connect', target.upstream.name, target.sessionId]))) return;
  const flow = await startedFlow(deps, ctx, target);
  if (!flow) return;
  sendOnward(ctx.res, { url: deps.flows.authorizationUrl(flow), upstream: target.upstream.name });
}

/** The upstream `/connect/{name}` names, and the session this browser signed in with (pages answer otherwise). */
async function connectTarget(deps: ConnectRoutesDeps, ctx: RequestContext): Promise<ConnectTarget | undefined> {
  const upstream = deps.byName.get(ctx.params.name!);
  if (!upstream) {
    sendPage(ctx.res, 404, { title: 'Unknown server', message: 'No server with that name is connected through its own authorization.' });
    return undefined;
  }
  ctx.log.upstream = upstream.name;
  const who = deps.browser.current(ctx.req);
  if (!who) {
    signInFirst(deps.browser, ctx);
    return undefined;
  }
  // Only the session this browser signed in with: never one picked for it (see the module comment).
  if (who.sessionId === undefined) {
    whichSession(ctx, upstream.name);
    return undefined;
  }
  return { upstream, subject: who.subject, sessionId: who.sessionId };
}

/** A flow (new or pending) for the target, read back from the store; answers when there is none. */
async function startedFlow(deps: ConnectRoutesDeps, ctx: RequestContext, { upstream, subject, sessionId }: ConnectTarget): Promise<UpstreamFlow | undefined> {
  let flowId: string;
  try {
    flowId = (await deps.flows.startFlow({ principal: { subject, sessionId }, upstream })).flowId;
  } catch (err) {
    // A browser gets a page, not JSON: discovery and registration errors are ours to word (502).
    if (!(err instanceof HttpError) || err.status !== 502) throw err;
    sendPage(ctx.res, 502, { title: `Cannot connect to ${upstream.name}`, message: err.message, hint: 'Tell your administrator if this keeps happening.' });
    return undefined;
  }
  const flow = await flowNamed(deps.stores, flowId);
  if (!flow) expired(ctx);
  return flow;
}
