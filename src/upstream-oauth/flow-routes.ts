/**
 * The browser legs of a flow an agent was handed: the start link (`GET /oauth/upstream/start`),
 * its confirmation (`POST`), and the upstream's redirect back (`GET /oauth/upstream/callback`).
 * Each checks that the browser is signed in as the user the flow belongs to before it acts.
 */
import type { RequestContext } from '../http/router.ts';
import { confirmation, confirmPage, expired, flowUser, START_AGAIN, type BrowserSession } from './browser-checks.ts';
import { FlowError, type FlowFailure } from './code-exchange.ts';
import type { UpstreamFlows } from './flow.ts';
import { sendOnward, sendPage, sendRedirect } from './pages.ts';
import type { UpstreamFlow } from './records.ts';
import type { UpstreamStores } from './stores.ts';

/** Sent when a user finished connecting, so the agent's open stream can be told (`notifications/elicitation/complete`). */
export interface ConnectedEvent {
  sessionId: string;
  upstream: string;
  elicitationId: string;
  /** The agent's `Mcp-Session-Id` when the flow started; undefined when there was none. */
  mcpSessionId: string | undefined;
}

/** What the flow's browser legs need; `createUpstreamOAuthRoutes` builds it once. */
export interface FlowRoutesDeps {
  flows: Pick<UpstreamFlows, 'authorizationUrl' | 'complete'>;
  stores: Pick<UpstreamStores, 'flows'>;
  browser: BrowserSession;
  /** Base path of the public URL ('' or '/prefix'). */
  basePath: string;
  /** Told when a user finished connecting; what it throws is ignored. */
  onConnected(event: ConnectedEvent): void;
}

/** What `flowRecord` (flow-start.ts) mints: 24 random bytes, base64url. Anything else is not worth a store lookup. */
const FLOW_ID = /^[A-Za-z0-9_-]{32}$/;

/** What each callback failure tells the user. */
const FAILURE_PAGES: Record<FlowFailure, { status: number; title: string; hint: string }> = {
  access_denied: { status: 403, title: 'Access not granted', hint: 'Nothing was connected. Your agent will ask again the next time it needs this server.' },
  authorization_error: { status: 502, title: 'Authorization failed', hint: START_AGAIN },
  iss_mismatch: { status: 400, title: 'Authorization refused', hint: START_AGAIN },
  iss_missing: { status: 400, title: 'Authorization refused', hint: START_AGAIN },
  invalid_response: { status: 400, title: 'Authorization failed', hint: START_AGAIN },
  exchange_failed: { status: 502, title: 'Authorization failed', hint: START_AGAIN },
};

/** The flow a start link or its confirmation names, when it still exists. */
export async function flowNamed(stores: Pick<UpstreamStores, 'flows'>, flowId: string | undefined | null): Promise<UpstreamFlow | undefined> {
  return flowId && FLOW_ID.test(flowId) ? stores.flows.get(flowId) : undefined;
}

/** `GET /oauth/upstream/start?flow=…`: the flow's user? then the confirmation page (or, chained, straight on). */
export async function startLink(deps: FlowRoutesDeps, ctx: RequestContext): Promise<void> {
  const flow = await flowNamed(deps.stores, ctx.url.searchParams.get('flow'));
  if (!flow) return expired(ctx);
  const who = flowUser(deps.browser, ctx, flow.subject);
  if (!who) return;
  ctx.log.upstream = flow.upstream;
  // Chained by our own authorization in this browser, which the user has just signed in to and approved.
  if (flow.returnTo) return sendRedirect(ctx.res, deps.flows.authorizationUrl(flow), 302);
  confirmPage(deps.browser, ctx, {
    upstream: flow.upstream,
    subject: who.subject,
    action: `${ctx.url.origin}${deps.basePath}/oauth/upstream/start`,
    fields: { flow: flow.flowId },
    bind: ['upstream-start', flow.flowId],
  });
}

/** `POST /oauth/upstream/start`: the confirmation, then on to the upstream's authorization endpoint. */
export async function confirmStart(deps: FlowRoutesDeps, ctx: RequestContext): Promise<void> {
  const form = await confirmation(deps.browser, ctx, (f) => ['upstream-start', f.get('flow') ?? '']);
  if (!form) return;
  const flow = await flowNamed(deps.stores, form.get('flow'));
  if (!flow) return expired(ctx);
  if (!flowUser(deps.browser, ctx, flow.subject)) return;
  ctx.log.upstream = flow.upstream;
  sendOnward(ctx.res, { url: deps.flows.authorizationUrl(flow), upstream: flow.upstream });
}

/** `GET /oauth/upstream/callback`: look up the flow by its state, check the browser, take the state, exchange the code, answer. */
export async function callback(deps: FlowRoutesDeps, ctx: RequestContext): Promise<void> {
  const flow = await flowOfState(deps, ctx);
  if (!flow) return;
  ctx.log.upstream = flow.upstream;
  // Checked before the state is consumed, so a stranger's browser cannot burn the user's flow.
  if (!flowUser(deps.browser, ctx, flow.subject)) return;
  if (!(await deps.stores.flows.take(flow))) return expired(ctx);
  if (!(await exchangeCode(deps, ctx, flow))) return;
  notifyConnected(deps, flow);
  answerConnected(ctx, flow);
}

/** The flow the callback's `state` belongs to, without consuming it; answers when there is none. */
async function flowOfState(deps: FlowRoutesDeps, ctx: RequestContext): Promise<UpstreamFlow | undefined> {
  const state = ctx.url.searchParams.get('state');
  if (!state) {
    sendPage(ctx.res, 400, { title: 'Invalid authorization response', message: 'The response has no state parameter.', hint: START_AGAIN });
    return undefined;
  }
  const flow = await deps.stores.flows.byState(state);
  if (!flow) expired(ctx);
  return flow;
}

/** Turns the callback's parameters into a stored token; true when it did, else the failure is answered. */
async function exchangeCode(deps: FlowRoutesDeps, ctx: RequestContext, flow: UpstreamFlow): Promise<boolean> {
  try {
    await deps.flows.complete(flow, ctx.url.searchParams, ctx.signal);
    return true;
  } catch (err) {
    if (!(err instanceof FlowError)) throw err;
    ctx.log.flowError = err.failure;
    // A chained authorization (our /oauth/authorize) goes on without this connection: it decides what the agent gets.
    if (flow.returnTo) {
      sendRedirect(ctx.res, flow.returnTo);
      return false;
    }
    const page = FAILURE_PAGES[err.failure];
    sendPage(ctx.res, page.status, { title: page.title, message: err.message, hint: page.hint });
    return false;
  }
}

function notifyConnected(deps: FlowRoutesDeps, flow: UpstreamFlow): void {
  try {
    deps.onConnected({ sessionId: flow.sessionId, upstream: flow.upstream, elicitationId: flow.elicitationId, mcpSessionId: flow.mcpSessionId });
  } catch {
    // A notification is a courtesy: the user is connected whatever happens to it.
  }
}

/** The end of a successful callback: back to a chained authorization, else the "Connected" page. */
function answerConnected(ctx: RequestContext, flow: UpstreamFlow): void {
  if (flow.returnTo) return sendRedirect(ctx.res, flow.returnTo);
  sendPage(ctx.res, 200, {
    title: `Connected to ${flow.upstream}`,
    message: `mcpgate can now use ${flow.upstream} on your behalf. Return to your agent and retry.`,
    hint: 'You can close this window.',
  });
}
