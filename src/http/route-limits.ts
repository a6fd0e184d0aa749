/**
 * The rate limits of the routes that answer unauthenticated requests with work: a store write,
 * a call to the company IdP or to an upstream authorization server, a metadata-document fetch,
 * a password-hash-like comparison. Each such route has two limits per minute: one per client
 * address (IPv6 per /64) and one for all clients together, so neither one client nor a
 * distributed flood can turn the gateway into a load generator against the IdP, an upstream or
 * the store. A refused request gets 429 with `Retry-After` (an HTML page on browser routes).
 *
 * Not limited here: the static documents (`/.well-known/*`, the JWKS, our client metadata
 * document), answered from memory at less cost than a limiter's store round trip; the ops routes;
 * the MCP path and `/connections`, which check a token first.
 */
import type { Config } from '../config/schema.ts';
import type { Store } from '../store/port.ts';
import { toHttpError } from './errors.ts';
import { combineLimiters, createGlobalLimiter, createRateLimiter, type RateLimiter } from './rate-limit.ts';
import type { Handler, RequestContext, Route } from './router.ts';

/** The limited routes, as `server.rateLimits` names them. */
export type LimitedRoute = keyof RouteLimitTable;

/** Requests per minute: per client address, and from all clients together. */
export interface RouteLimit {
  perIp: number;
  global: number;
}

type RouteLimitTable = Required<Config['server']['rateLimits']>;

/** Where each limited route is (under the public URL's path), and whether a browser reads its answers. */
const ROUTES: Record<LimitedRoute, { path: string; browser: boolean }> = {
  authorize: { path: '/oauth/authorize', browser: true },
  authorizeResume: { path: '/oauth/authorize/resume', browser: true },
  callback: { path: '/oauth/callback', browser: true },
  consent: { path: '/oauth/consent', browser: true },
  signIn: { path: '/oauth/login', browser: true },
  register: { path: '/oauth/register', browser: false },
  token: { path: '/oauth/token', browser: false },
  revoke: { path: '/oauth/revoke', browser: false },
  upstreamStart: { path: '/oauth/upstream/start', browser: true },
  upstreamCallback: { path: '/oauth/upstream/callback', browser: true },
  connect: { path: '/connect/:name', browser: true },
};

/**
 * The defaults, per minute. Agents behind one company NAT share an address: the token endpoint
 * (every agent refreshes about every access-token lifetime) gets the most room. Browser steps
 * happen a few times per sign-in.
 */
export const DEFAULT_ROUTE_LIMITS: Readonly<Record<LimitedRoute, RouteLimit>> = {
  authorize: { perIp: 60, global: 600 },
  authorizeResume: { perIp: 60, global: 600 },
  callback: { perIp: 60, global: 600 },
  consent: { perIp: 60, global: 600 },
  signIn: { perIp: 60, global: 600 },
  register: { perIp: 30, global: 300 },
  token: { perIp: 300, global: 6000 },
  revoke: { perIp: 120, global: 3000 },
  upstreamStart: { perIp: 60, global: 600 },
  upstreamCallback: { perIp: 60, global: 600 },
  connect: { perIp: 60, global: 600 },
};

/** Options of {@link applyRouteLimits}. */
export interface RouteLimitsOptions {
  store: Store;
  /** The public URL's path ('' or '/prefix'): the routes sit under it. */
  basePath: string;
  /** `server.rateLimits`: overrides of {@link DEFAULT_ROUTE_LIMITS}, per route and field. */
  overrides?: Config['server']['rateLimits'];
  /** Writes the refusal page of a browser route (status 429, a title, a sentence, `Retry-After`). */
  sendPage(ctx: RequestContext, status: number, title: string, message: string, headers: Record<string, string>): void;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
}

/**
 * Returns `routes` with the limits put in front of the handlers of the limited routes (every
 * method but the CORS preflight, which does no work). Limits are counted in the store, so they
 * hold across replicas once the store is Valkey.
 * @throws TypeError for a limit that is not a positive integer.
 */
export function applyRouteLimits(routes: readonly Route[], options: RouteLimitsOptions): Route[] {
  const { store, basePath, now } = options;
  const byPath = new Map<string, RateLimiter & { browser: boolean }>();
  for (const [id, where] of Object.entries(ROUTES) as Array<[LimitedRoute, (typeof ROUTES)[LimitedRoute]]>) {
    const limit = { ...DEFAULT_ROUTE_LIMITS[id], ...options.overrides?.[id] };
    const name = `route-${id.toLowerCase()}`;
    const limiter = combineLimiters(
      createRateLimiter({ store, name, limit: limit.perIp, windowMs: 60_000, now }),
      createGlobalLimiter({ store, name, limit: limit.global, windowMs: 60_000, now }),
    );
    byPath.set(`${basePath}${where.path}`, { ...limiter, browser: where.browser });
  }
  return routes.map((route) => {
    const limiter = byPath.get(route.path);
    if (!limiter || route.method === 'OPTIONS') return route;
    return { ...route, handler: limited(route.handler, limiter, limiter.browser ? options.sendPage : undefined) };
  });
}

function limited(handler: Handler, limiter: RateLimiter, sendPage: RouteLimitsOptions['sendPage'] | undefined): Handler {
  return async (ctx) => {
    try {
      await limiter.enforce(ctx.clientIp, ctx.signal);
    } catch (thrown) {
      const error = toHttpError(thrown);
      ctx.log.error = error.code;
      // A store outage is the front door's 503 either way; only the refusal gets a page.
      if (!sendPage || error.status !== 429) throw thrown;
      return sendPage(ctx, 429, 'Too many requests', 'Too many requests came from your network. Wait a minute, then try again.', error.headers);
    }
    return handler(ctx);
  };
}
