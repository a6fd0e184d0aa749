/**
 * The gateway routes and the front door: the MCP routes with their auth_required channels, the
 * upstream connect pages, the login's routes and the ops routes, each limited where it answers
 * unauthenticated requests.
 */
import type * as LoginPages from '../authserver/login/html.ts';
import type { Principal } from '../credentials/types.ts';
import { openAccess, type Authenticator } from '../gateway/authenticate.ts';
import { createAuthRequiredRenderer } from '../gateway/challenge.ts';
import { createClientCapabilities } from '../gateway/client-capabilities.ts';
import { createElicitationEvents, type ElicitationEvents } from '../gateway/elicitation-events.ts';
import { createMcpRoutes } from '../gateway/mcp-route.ts';
import type * as SessionOwners from '../gateway/session-owner.ts';
import { createStreamRegistry } from '../gateway/stream-registry.ts';
import { createToolCatalog } from '../gateway/tool-catalog.ts';
import type { Upstream } from '../gateway/upstream.ts';
import { createBodyBudget } from '../http/body-budget.ts';
import { InvalidToken } from '../http/errors.ts';
import { createOpsRoutes } from '../http/ops-routes.ts';
import { applyRouteLimits } from '../http/route-limits.ts';
import type { RequestContext } from '../http/router.ts';
import { createFrontDoor, type FrontDoor } from '../http/server.ts';
import type * as ConnectRoutes from '../upstream-oauth/routes.ts';
import type { MessageBus } from '../store/bus.ts';
import type { Registry } from '../observability/metrics.ts';
import type { Sessions } from './authserver.ts';
import type { AppBasics } from './basics.ts';
import { loadModule } from './lazy.ts';
import type { Login } from './login.ts';
import { busFor, type Storage } from './storage.ts';
import type { UpstreamOAuth } from './upstream-oauth.ts';

/** Options of {@link assembleGateway}. */
export interface GatewayOptions {
  basics: AppBasics;
  registry: Registry;
  storage: Storage;
  sessions: Sessions;
  /** Absent without `idp:`: the MCP routes are then open and there are no connect pages. */
  login: Login | undefined;
  upstreamOAuth: UpstreamOAuth;
  upstreams: Upstream[];
  /** Aborted when the drain begins. */
  drain: AbortSignal;
  isDraining: () => boolean;
}

/** The front door with every route, and the event bus the auth_required channels listen on. */
export interface Gateway {
  frontDoor: FrontDoor;
  elicitationEvents: ElicitationEvents;
  bus: MessageBus;
}

/** Builds the auth_required channels and the front door with every route. */
export function assembleGateway(options: GatewayOptions): Gateway {
  const { config, logger, metrics, tracer, now, publicUrl, basePath } = options.basics;
  const { store, sealer } = options.storage;
  const { login, upstreams, upstreamOAuth, drain } = options;
  const { clientCapabilities, streams, bus, elicitationEvents, authRequired } = assembleChannels(options);

  const frontDoor = createFrontDoor({
    logger,
    metrics,
    tracer,
    publicUrl,
    trustedProxies: config.server.trustedProxies,
    // Every route that works for an unauthenticated request is limited per client and globally (route-limits.ts).
    routes: applyRouteLimits([
      ...createOpsRoutes({
        registry: options.registry,
        checks: [
          { name: 'store', check: (signal) => store.ping(signal) },
          {
            name: 'events',
            check: async () => {
              if (!elicitationEvents.subscribed) throw Object.assign(new Error('not subscribed to the event bus yet'), { code: 'NOT_SUBSCRIBED' });
            },
          },
        ],
        isDraining: options.isDraining,
      }),
      ...(login?.routes ?? []),
      ...(login
        ? loadModule<typeof ConnectRoutes>('../upstream-oauth/routes').createUpstreamOAuthRoutes({
            flows: upstreamOAuth.flows,
            stores: upstreamOAuth.stores,
            registration: upstreamOAuth.registration,
            upstreams: upstreamOAuth.upstreams,
            browser: login.browser,
            authenticate: (ctx, name) => authenticateForConnections(login.authenticator, ctx, name, { upstreams, upstreamOAuth }),
            basePath,
            onConnected: (done) => void elicitationEvents.completed(done),
          })
        : []),
      ...createMcpRoutes({
        upstreams,
        authenticator: login?.authenticator ?? openAccess,
        logger,
        metrics,
        publicOrigin: publicUrl.origin,
        allowedOrigins: config.server.allowedOrigins,
        maxBodyBytes: config.server.maxBodyBytes,
        bodyBudget: createBodyBudget({ maxBytes: config.server.maxBodyBytesInFlight, onChange: (bytes) => metrics.bodyBytesInFlight.set({}, bytes) }),
        upstreamTimeoutMs: config.server.upstreamTimeout,
        sseKeepAliveMs: config.server.sseKeepAlive,
        basePath,
        authRequired,
        clientCapabilities,
        streams,
        // With login, each MCP session id is served only to the user it was issued to.
        sessionOwners: login ? loadModule<typeof SessionOwners>('../gateway/session-owner').createSessionOwners({ store, sealer, now }) : undefined,
        // Answers to requests in flight get most of drainTimeout; the last second is for ending them at an event boundary.
        drain: { signal: drain, requestGraceMs: config.server.drainTimeout - Math.min(1000, Math.floor(config.server.drainTimeout / 5)) },
        logUser: config.log.user,
        toolCatalog: createToolCatalog({ maxPerUpstream: 200 }),
        tracer,
      }),
    ], {
      store,
      basePath,
      overrides: config.server.rateLimits,
      // Only login's browser routes answer with a page: loaded on the first one.
      sendPage: (ctx, status, title, message, headers) => loadModule<typeof LoginPages>('../authserver/login/html').sendErrorPage(ctx.res, status, title, message, { headers }),
      now,
    }),
  });
  return { frontDoor, elicitationEvents, bus };
}

/**
 * auth_required channels: what each agent session understands (in the store, for every
 * replica), and this replica's open GET streams, which hear notifications/elicitation/complete
 * from whichever replica ran the upstream callback (over the message bus).
 */
function assembleChannels(options: Pick<GatewayOptions, 'basics' | 'storage' | 'sessions' | 'drain'>) {
  const { config, logger, metrics, now } = options.basics;
  const { store, sealer } = options.storage;
  const clientCapabilities = createClientCapabilities({ store, now });
  const streams = createStreamRegistry();
  const bus = busFor(config, logger);
  const elicitationEvents = createElicitationEvents({ bus, store, sealer, streams, outcomes: metrics.elicitationNotifications, logger });
  const challengeSettings = new Map(config.upstreams.map((u) => [u.name, 'challenge' in u.auth ? u.auth.challenge : ('auto' as const)]));
  const authRequired = createAuthRequiredRenderer({
    capabilities: clientCapabilities,
    streams,
    settingFor: (name) => challengeSettings.get(name) ?? 'auto',
    sseKeepAliveMs: config.server.sseKeepAlive,
    onReauthorize: (principal, scopes) => options.sessions.stepUp.mark(principal.sessionId, scopes),
    drain: options.drain,
  });

  return { clientCapabilities, streams, bus, elicitationEvents, authRequired };
}

/**
 * `/connections` takes our access token for the named upstream, or (listing) for any upstream in
 * mode `oauth`: every such token names the session whose connections it may see.
 */
async function authenticateForConnections(
  authenticator: Authenticator,
  ctx: RequestContext,
  name: string | undefined,
  parts: { upstreams: Upstream[]; upstreamOAuth: UpstreamOAuth },
): Promise<Principal> {
  const oauthUpstreams = parts.upstreamOAuth.upstreams;
  const candidates = parts.upstreams.filter((u) => (name === undefined ? oauthUpstreams.some((o) => o.name === u.name) : u.name === name));
  let refusal: unknown = new InvalidToken('an access token for one of the upstreams is required');
  for (const upstream of candidates) {
    try {
      const principal = await authenticator.authenticate(ctx, upstream);
      if (principal) return principal;
    } catch (error) {
      refusal = error;
    }
  }
  throw refusal;
}
