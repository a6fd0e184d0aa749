/**
 * `/connections`: the agent's view of its session's upstream connections, behind our bearer token
 * (401/403 as on the gateway path). `GET` lists them with their connect URLs; `DELETE
 * /connections/{name}` forgets the token and revokes it at the upstream (RFC 7009).
 */
import { NotFound } from '../http/errors.ts';
import type { RequestContext } from '../http/router.ts';
import type { FlowPrincipal, OAuthUpstream, UpstreamFlows } from './flow.ts';
import type { UpstreamStores } from './stores.ts';

/** What the connections API needs; `createUpstreamOAuthRoutes` builds it once. */
export interface ConnectionsDeps {
  flows: Pick<UpstreamFlows, 'disconnect'>;
  stores: Pick<UpstreamStores, 'tokens'>;
  /** The upstreams in mode `oauth`, in configuration order, and by name. */
  upstreams: readonly OAuthUpstream[];
  byName: ReadonlyMap<string, OAuthUpstream>;
  /** Verifies our bearer token: a token for `upstream` when given, else for any upstream of the list. */
  authenticate(ctx: RequestContext, upstream?: string): Promise<FlowPrincipal>;
  /** Base path of the public URL ('' or '/prefix'). */
  basePath: string;
}

/** `GET /connections`: every upstream in mode `oauth`, whether this session is connected to it, and where to connect it. */
export async function listConnections(deps: ConnectionsDeps, ctx: RequestContext): Promise<void> {
  const principal = await deps.authenticate(ctx);
  const connected = new Set(await deps.stores.tokens.list(principal.sessionId));
  sendJson(ctx, {
    connections: deps.upstreams.map((u) => ({ upstream: u.name, connected: connected.has(u.name), connect_url: `${ctx.url.origin}${deps.basePath}/connect/${u.name}` })),
  });
}

/** `DELETE /connections/{name}`: forgets this session's token for the upstream and revokes it there where supported. */
export async function disconnect(deps: ConnectionsDeps, ctx: RequestContext): Promise<void> {
  const upstream = deps.byName.get(ctx.params.name!);
  if (!upstream) throw new NotFound(`no upstream named "${ctx.params.name}" uses its own authorization`);
  ctx.log.upstream = upstream.name;
  const principal = await deps.authenticate(ctx, upstream.name);
  const result = await deps.flows.disconnect(principal.sessionId, upstream.name);
  sendJson(ctx, { upstream: upstream.name, disconnected: result.connected, revoked: result.revoked });
}

function sendJson(ctx: RequestContext, value: unknown): void {
  const body = JSON.stringify(value);
  ctx.res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  ctx.res.end(body);
}
