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
 *
 * The handlers live in `flow-routes.ts` (start link, confirmation, callback), `connect-routes.ts`
 * (`/connect/{name}`) and `connections.ts` (`/connections`); the browser checks and the
 * confirmation step they share in `browser-checks.ts`. This module wires them into the table.
 */
import type { RequestContext, Route } from '../http/router.ts';
import type { BrowserSession } from './browser-checks.ts';
import type { ClientRegistration } from './client-registration.ts';
import { confirmConnect, connectPage, type ConnectRoutesDeps } from './connect-routes.ts';
import { disconnect, listConnections, type ConnectionsDeps } from './connections.ts';
import type { FlowPrincipal, OAuthUpstream, UpstreamFlows } from './flow.ts';
import { callback, confirmStart, startLink, type ConnectedEvent, type FlowRoutesDeps } from './flow-routes.ts';
import type { UpstreamStores } from './stores.ts';

// Where the gateway's assembly has always found these.
export type { BrowserSession, FormBinding } from './browser-checks.ts';
export type { ConnectedEvent } from './flow-routes.ts';

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

/** Builds the routes; see the module comment for the table. */
export function createUpstreamOAuthRoutes(options: UpstreamOAuthRoutesOptions): Route[] {
  const { flows, stores, browser, basePath, upstreams } = options;
  const byName = new Map(upstreams.map((u) => [u.name, u]));
  const flowLegs: FlowRoutesDeps = { flows, stores, browser, basePath, onConnected: (event) => options.onConnected?.(event) };
  const connectPages: ConnectRoutesDeps = { flows, stores, browser, basePath, byName };
  const connections: ConnectionsDeps = { flows, stores, upstreams, byName, basePath, authenticate: (ctx, upstream) => options.authenticate(ctx, upstream) };
  const clientMetadata = (ctx: RequestContext) => sendClientMetadata(options.registration, ctx);

  return [
    { method: 'GET', path: `${basePath}/oauth/upstream/start`, handler: (ctx) => startLink(flowLegs, ctx) },
    { method: 'POST', path: `${basePath}/oauth/upstream/start`, handler: (ctx) => confirmStart(flowLegs, ctx) },
    { method: 'GET', path: `${basePath}/oauth/upstream/callback`, handler: (ctx) => callback(flowLegs, ctx) },
    { method: 'GET', path: `${basePath}/oauth/client-metadata.json`, handler: clientMetadata },
    { method: 'GET', path: `${basePath}/connect/:name`, handler: (ctx) => connectPage(connectPages, ctx), name: '/connect/{name}' },
    { method: 'POST', path: `${basePath}/connect/:name`, handler: (ctx) => confirmConnect(connectPages, ctx), name: '/connect/{name}' },
    { method: 'GET', path: `${basePath}/connections`, handler: (ctx) => listConnections(connections, ctx) },
    { method: 'DELETE', path: `${basePath}/connections/:name`, handler: (ctx) => disconnect(connections, ctx), name: '/connections/{name}' },
  ];
}

/** `GET /oauth/client-metadata.json`: our Client ID Metadata Document, for upstream authorization servers. */
function sendClientMetadata(registration: Pick<ClientRegistration, 'metadataDocument'>, ctx: RequestContext): void {
  const body = JSON.stringify(registration.metadataDocument());
  ctx.res.writeHead(200, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    // Authorization servers cache it (CIMD draft §4.3); it changes only with the public URL.
    'cache-control': 'public, max-age=3600',
  });
  ctx.res.end(body);
}
