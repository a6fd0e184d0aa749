import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorStyle } from './send-error.ts';

/** Everything a handler gets for one request. */
export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  /** The request target parsed against our public URL (path and query as the client sent them). */
  url: URL;
  /** `:name` segments of the matched route (frozen: shared by every request of the path). */
  params: Readonly<Record<string, string>>;
  requestId: string;
  /** The client's address: the socket peer, or the X-Forwarded-For hop a trusted proxy vouches for. */
  clientIp: string;
  /** Scheme and host the client used (from trusted X-Forwarded-* or the socket). */
  forwardedProto: string;
  forwardedHost: string | undefined;
  /** Aborted when the client goes away before the response ends. */
  signal: AbortSignal;
  /** Fields added to this request's access-log line (no secrets: upstream names, methods, session tags). */
  log: Record<string, unknown>;
  /** How errors thrown by the handler are rendered; the MCP path switches to JSON-RPC. */
  errorStyle: ErrorStyle;
  /** The JSON-RPC id of the request, once known, so errors can carry it. */
  rpcId?: string | number | null;
}

export type Handler = (ctx: RequestContext) => Promise<void> | void;

/** One row of the route table. `path` segments starting with ":" capture a parameter. */
export interface Route {
  method: string | string[];
  path: string;
  handler: Handler;
  /** Error rendering for this route; default `oauth` (RFC 6749 JSON). */
  errorStyle?: ErrorStyle;
  /** Short name for metrics and logs (default: the path pattern). */
  name?: string;
}

export type Match =
  | { kind: 'found'; route: Route; params: Readonly<Record<string, string>> }
  /** `errorStyle`: that of the path's routes, so a 405 on the MCP path is a JSON-RPC error like its other refusals. */
  | { kind: 'method_not_allowed'; allow: string[]; errorStyle?: ErrorStyle }
  | { kind: 'not_found' };

interface Compiled {
  route: Route;
  methods: Set<string>;
  segments: string[];
}

/** Most paths whose patterned match is remembered (see {@link createRouter}). */
const MEMO_SIZE = 1024;

/**
 * The route table: exact paths in a map, parameterised ones scanned in order.
 * Built once at start-up; `match` is called for every request. A path that matched a
 * parameterised route is remembered (frozen: every request of that path shares it), so the
 * MCP path `/{upstream}/mcp` is not split, scanned and decoded on each request; at most
 * {@link MEMO_SIZE} paths, forgotten all at once when full (a flood of made-up paths costs what
 * it cost before).
 */
export function createRouter(routes: Route[]): { match(method: string, pathname: string): Match } {
  const exact = new Map<string, Compiled[]>();
  const patterned: Compiled[] = [];
  for (const route of routes) {
    const compiled: Compiled = {
      route,
      methods: new Set((Array.isArray(route.method) ? route.method : [route.method]).map((m) => m.toUpperCase())),
      segments: route.path.split('/'),
    };
    if (route.path.includes('/:')) patterned.push(compiled);
    else exact.set(route.path, [...(exact.get(route.path) ?? []), compiled]);
  }
  const memo = new Map<string, Map<string, Match>>();
  const EMPTY: Record<string, string> = Object.freeze({});

  function scan(method: string, pathname: string): Match {
    const allow: string[] = [];
    let errorStyle: ErrorStyle | undefined;
    const byPath = exact.get(pathname);
    if (byPath) {
      for (const c of byPath) {
        if (c.methods.has(method)) return { kind: 'found', route: c.route, params: EMPTY };
        allow.push(...c.methods);
        errorStyle ??= c.route.errorStyle;
      }
    }
    const parts = pathname.split('/');
    for (const c of patterned) {
      const params = matchSegments(c.segments, parts);
      if (!params) continue;
      if (c.methods.has(method)) return remember(method, pathname, { kind: 'found', route: c.route, params: Object.freeze(params) });
      allow.push(...c.methods);
      errorStyle ??= c.route.errorStyle;
    }
    return allow.length > 0 ? { kind: 'method_not_allowed', allow: [...new Set(allow)], errorStyle } : { kind: 'not_found' };
  }

  function remember(method: string, pathname: string, match: Match): Match {
    let byMethod = memo.get(pathname);
    if (!byMethod) {
      if (memo.size >= MEMO_SIZE) memo.clear();
      memo.set(pathname, (byMethod = new Map()));
    }
    byMethod.set(method, match);
    return match;
  }

  return {
    match(method, pathname) {
      return memo.get(pathname)?.get(method) ?? scan(method, pathname);
    },
  };
}

function matchSegments(pattern: string[], parts: string[]): Record<string, string> | undefined {
  if (pattern.length !== parts.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    const part = parts[i]!;
    if (p.startsWith(':')) {
      if (part === '') return undefined;
      try {
        params[p.slice(1)] = decodeURIComponent(part);
      } catch {
        return undefined;
      }
    } else if (p !== part) return undefined;
  }
  return params;
}
