/**
 * Discovery for an upstream MCP server's own OAuth: protected resource metadata
 * (RFC 9728), then its authorization server's metadata (RFC 8414 / OpenID Connect Discovery),
 * in the order the MCP authorization spec (2025-11-25) prescribes.
 *
 * Every fetch goes through the SSRF-guarded fetcher. What a server publishes is checked before
 * it is used: the resource must be the MCP server we asked about, the issuer the one we asked
 * for, PKCE S256 must be supported, and every endpoint must be https outside dev mode.
 */
import { FetchRefusedError, type GuardedRequest, type GuardedResponse } from '../net/guarded-fetch.ts';
import { createDiscoveryCache } from './discovery-cache.ts';

/** Why discovery failed. */
export type DiscoveryErrorCode =
  | 'bad_url'
  | 'insecure_url'
  | 'fetch_failed'
  | 'not_found'
  | 'invalid_metadata'
  | 'resource_mismatch'
  | 'issuer_mismatch'
  | 'pkce_unsupported';

/** Thrown by discovery. `message` is safe to log and to show: it names URLs without their query. */
export class DiscoveryError extends Error {
  override name = 'DiscoveryError';
  readonly code: DiscoveryErrorCode;
  constructor(code: DiscoveryErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** RFC 9728 §2 protected resource metadata, as checked here; other members are passed through. */
export interface ProtectedResourceMetadata {
  readonly resource: string;
  /** Issuer identifiers; at least one (the MCP spec requires it). */
  readonly authorization_servers: readonly string[];
  readonly scopes_supported?: readonly string[];
  readonly [member: string]: unknown;
}

/** RFC 8414 §2 authorization server metadata, as checked here; other members are passed through. */
export interface AuthorizationServerMetadata {
  readonly issuer: string;
  readonly authorization_endpoint: string;
  readonly token_endpoint: string;
  /** Always contains `S256`. */
  readonly code_challenge_methods_supported: readonly string[];
  readonly registration_endpoint?: string;
  readonly revocation_endpoint?: string;
  readonly scopes_supported?: readonly string[];
  readonly client_id_metadata_document_supported?: boolean;
  readonly authorization_response_iss_parameter_supported?: boolean;
  readonly [member: string]: unknown;
}

/** Dependencies and options of {@link createDiscovery}; validated when it is called. */
export interface DiscoveryOptions {
  /** The SSRF-guarded fetcher (`createGuardedFetch`). */
  fetch: (url: string, init?: GuardedRequest) => Promise<GuardedResponse>;
  /** How long successful discoveries are reused, in milliseconds. Default 900000 (15 min). */
  cacheTtlMs?: number;
  /** How long failures are reused, in milliseconds; capped at `cacheTtlMs`. Default 5000. */
  failureTtlMs?: number;
  /** Accept `http:` metadata, issuer and endpoint URLs (dev mode only). Default false. */
  allowHttp?: boolean;
  /** Cached results kept at most. Default 1000. */
  maxEntries?: number;
  /** The clock, in milliseconds since the epoch. Default `Date.now`. */
  now?: () => number;
}

/** The discovery client; see {@link createDiscovery}. */
export interface Discovery {
  /**
   * RFC 9728 protected resource metadata for the MCP server at `mcpUrl`. Tries, in order, the
   * challenge's `resource_metadata` URL, the path-inserted well-known URL
   * (`/.well-known/oauth-protected-resource/<path>`), then the root one; a 4xx/5xx or non-JSON
   * answer moves on to the next, a JSON document that fails validation stops (it is an answer).
   * @param challenge the upstream's parsed Bearer challenge (`bearerChallenge()`), if any.
   */
  discoverResource(mcpUrl: string, challenge?: { resourceMetadata?: string }): Promise<ProtectedResourceMetadata>;
  /**
   * RFC 8414 / OIDC metadata of the authorization server identified by `issuer`, tried in the MCP
   * spec's order (with a path: `/.well-known/oauth-authorization-server/<path>`,
   * `/.well-known/openid-configuration/<path>`, `<path>/.well-known/openid-configuration`;
   * without: `/.well-known/oauth-authorization-server`, `/.well-known/openid-configuration`).
   */
  discoverAuthorizationServer(issuer: string): Promise<AuthorizationServerMetadata>;
}

const PRM_WELL_KNOWN = '/.well-known/oauth-protected-resource';
const OAUTH_WELL_KNOWN = '/.well-known/oauth-authorization-server';
const OIDC_WELL_KNOWN = '/.well-known/openid-configuration';
/** Endpoints we may call besides the two required ones; each must be a URL we would fetch. */
const OPTIONAL_ENDPOINTS = [
  'registration_endpoint',
  'revocation_endpoint',
  'jwks_uri',
  'introspection_endpoint',
  'pushed_authorization_request_endpoint',
] as const;

/** What the discovery steps need: the fetcher, and whether `http:` URLs are accepted (dev mode). */
interface DiscoveryContext {
  fetch: DiscoveryOptions['fetch'];
  allowHttp: boolean;
}

/** Creates the discovery client. @throws TypeError for invalid options. */
export function createDiscovery(options: DiscoveryOptions): Discovery {
  if (typeof options.fetch !== 'function') throw new TypeError('discovery: fetch is required');
  const ttlMs = duration(options.cacheTtlMs ?? 15 * 60_000, 'cacheTtlMs');
  const failureTtlMs = Math.min(duration(options.failureTtlMs ?? 5000, 'failureTtlMs'), ttlMs);
  const maxEntries = options.maxEntries ?? 1000;
  if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new TypeError('discovery: maxEntries must be a positive integer');
  const ctx: DiscoveryContext = { fetch: options.fetch, allowHttp: options.allowHttp ?? false };
  const cache = createDiscoveryCache({ ttlMs, failureTtlMs, maxEntries, now: options.now ?? Date.now });

  return {
    discoverResource(mcpUrl, challenge) {
      try {
        const mcp = parseUrl(ctx, mcpUrl, 'MCP server URL');
        const hint = challenge?.resourceMetadata === undefined ? undefined : parseUrl(ctx, challenge.resourceMetadata, 'resource_metadata');
        return cache(`prm ${mcp.href} ${hint?.href ?? ''}`, () => loadResource(ctx, mcp, hint));
      } catch (err) {
        return Promise.reject(err);
      }
    },
    discoverAuthorizationServer(issuer) {
      try {
        const url = checkIssuer(ctx, issuer, 'issuer', 'bad_url');
        return cache(`as ${issuer}`, () => loadAuthorizationServer(ctx, issuer, url));
      } catch (err) {
        return Promise.reject(err);
      }
    },
  };
}

/** An absolute http(s) URL; `http:` only in dev mode. @throws DiscoveryError (`code`, or `insecure_url`) */
function parseUrl(ctx: DiscoveryContext, value: unknown, what: string, code: DiscoveryErrorCode = 'bad_url'): URL {
  const url = typeof value === 'string' && URL.canParse(value) ? new URL(value) : undefined;
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) throw new DiscoveryError(code, `${what} is not an absolute http(s) URL`);
  if (url.protocol === 'http:' && !ctx.allowHttp) throw new DiscoveryError('insecure_url', `${what} must use https: ${safe(url)}`);
  return url;
}

/** GETs one candidate: the JSON object, or `undefined` when the server has nothing there. */
async function fetchJson(ctx: DiscoveryContext, url: string): Promise<Record<string, unknown> | undefined> {
  let res: GuardedResponse;
  try {
    res = await ctx.fetch(url, { headers: { accept: 'application/json' } });
  } catch (err) {
    const detail = err instanceof FetchRefusedError ? `${err.reason}: ${err.message}` : 'request failed';
    throw new DiscoveryError('fetch_failed', `cannot fetch ${safe(new URL(url))} (${detail})`, { cause: err });
  }
  if (res.status !== 200) return undefined;
  let doc: unknown;
  try {
    doc = res.json();
  } catch {
    return undefined; // e.g. a single-page app answering every path with HTML
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new DiscoveryError('invalid_metadata', `${safe(new URL(url))} is not a JSON object`);
  }
  return doc as Record<string, unknown>;
}

/** RFC 9728 §3.1: the challenge's hint, then the path-inserted well-known URL, then the root one. */
async function loadResource(ctx: DiscoveryContext, mcp: URL, hint: URL | undefined): Promise<ProtectedResourceMetadata> {
  const path = trimSlash(mcp.pathname);
  const candidates = [
    hint?.href,
    path ? `${mcp.origin}${PRM_WELL_KNOWN}${path}${mcp.search}` : undefined,
    `${mcp.origin}${PRM_WELL_KNOWN}`,
  ].filter((u, i, all): u is string => u !== undefined && all.indexOf(u) === i);
  for (const candidate of candidates) {
    const doc = await fetchJson(ctx, candidate);
    if (doc) return checkResource(ctx, doc, mcp, candidate);
  }
  throw new DiscoveryError('not_found', `no protected resource metadata for ${safe(mcp)}`);
}

/** RFC 9728 §2/§3.3: the document names our MCP server and at least one valid issuer. */
function checkResource(ctx: DiscoveryContext, doc: Record<string, unknown>, mcp: URL, from: string): ProtectedResourceMetadata {
  const where = `protected resource metadata at ${safe(new URL(from))}`;
  const { resource, authorization_servers: servers, scopes_supported: scopes } = doc;
  if (typeof resource !== 'string' || !URL.canParse(resource)) throw new DiscoveryError('invalid_metadata', `${where}: resource missing or not a URL`);
  // RFC 9728 §3.3: metadata that names another resource must not be used (it could send our
  // users to an attacker's authorization server).
  if (!resourceMatches(resource, mcp)) {
    throw new DiscoveryError('resource_mismatch', `${where}: resource ${safe(new URL(resource))} does not match ${safe(mcp)}`);
  }
  if (!Array.isArray(servers) || servers.length === 0) throw new DiscoveryError('invalid_metadata', `${where}: authorization_servers missing or empty`);
  for (const server of servers) checkIssuer(ctx, server, `${where}: authorization server`, 'invalid_metadata');
  if (scopes !== undefined && !isStringArray(scopes)) throw new DiscoveryError('invalid_metadata', `${where}: scopes_supported is not a list of strings`);
  return Object.freeze({ ...doc, resource, authorization_servers: Object.freeze([...(servers as string[])]) });
}

/** An issuer identifier: an http(s) URL without query or fragment. */
function checkIssuer(ctx: DiscoveryContext, value: unknown, what: string, code: DiscoveryErrorCode): URL {
  const url = parseUrl(ctx, value, what, code);
  // RFC 8414 §2: an issuer identifier has no query or fragment.
  if (url.search || (value as string).includes('#')) throw new DiscoveryError(code, `${what} has a query or fragment`);
  return url;
}

/** The well-known URLs of the MCP spec's order (see {@link Discovery.discoverAuthorizationServer}), first answer wins. */
async function loadAuthorizationServer(ctx: DiscoveryContext, issuer: string, url: URL): Promise<AuthorizationServerMetadata> {
  const path = trimSlash(url.pathname);
  const candidates = path
    ? [`${url.origin}${OAUTH_WELL_KNOWN}${path}`, `${url.origin}${OIDC_WELL_KNOWN}${path}`, `${url.origin}${path}${OIDC_WELL_KNOWN}`]
    : [`${url.origin}${OAUTH_WELL_KNOWN}`, `${url.origin}${OIDC_WELL_KNOWN}`];
  for (const candidate of candidates) {
    const doc = await fetchJson(ctx, candidate);
    if (doc) return checkAuthorizationServer(ctx, doc, issuer, candidate);
  }
  throw new DiscoveryError('not_found', `no authorization server metadata for ${safe(url)}`);
}

/** RFC 8414 §2/§3.3: the issuer asked for, usable endpoints, PKCE S256, the code response type. */
function checkAuthorizationServer(ctx: DiscoveryContext, doc: Record<string, unknown>, issuer: string, from: string): AuthorizationServerMetadata {
  const where = `authorization server metadata at ${safe(new URL(from))}`;
  // RFC 8414 §3.3 / OIDC Discovery §4.3: the issuer must be exactly the one asked for, or a
  // server could impersonate another one's tokens (mix-up).
  if (doc.issuer !== issuer) throw new DiscoveryError('issuer_mismatch', `${where}: issuer does not equal ${safe(new URL(issuer))}`);
  for (const name of ['authorization_endpoint', 'token_endpoint'] as const) {
    if (doc[name] === undefined) throw new DiscoveryError('invalid_metadata', `${where}: ${name} missing`);
    parseUrl(ctx, doc[name], `${where}: ${name}`, 'invalid_metadata');
  }
  for (const name of OPTIONAL_ENDPOINTS) if (doc[name] !== undefined) parseUrl(ctx, doc[name], `${where}: ${name}`, 'invalid_metadata');
  // MCP authorization 2025-11-25: absent code_challenge_methods_supported means no PKCE, refuse.
  const methods = doc.code_challenge_methods_supported;
  if (!isStringArray(methods) || !methods.includes('S256')) {
    throw new DiscoveryError('pkce_unsupported', `${where}: PKCE S256 not in code_challenge_methods_supported`);
  }
  const responseTypes = doc.response_types_supported;
  if (responseTypes !== undefined && !(isStringArray(responseTypes) && responseTypes.includes('code'))) {
    throw new DiscoveryError('invalid_metadata', `${where}: response type "code" not supported`);
  }
  if (doc.scopes_supported !== undefined && !isStringArray(doc.scopes_supported)) {
    throw new DiscoveryError('invalid_metadata', `${where}: scopes_supported is not a list of strings`);
  }
  return Object.freeze({ ...doc, code_challenge_methods_supported: Object.freeze([...methods]) }) as AuthorizationServerMetadata;
}

/**
 * RFC 9728 §3.3 asks for the resource to be identical to the URL requested. MCP servers commonly
 * publish their origin, or their path without the trailing slash, so we accept what the MCP SDKs
 * and draft-mcguinness-oauth-rfc9728bis accept: the same origin, no fragment, and a path equal to
 * the requested one or a whole-segment prefix of it. A query, when present, must be identical.
 */
function resourceMatches(resource: string, requested: URL): boolean {
  if (resource.includes('#')) return false; // RFC 8707 §2: a resource indicator has no fragment
  const url = new URL(resource);
  if (url.origin !== requested.origin) return false;
  if (url.search && url.search !== requested.search) return false;
  const have = trimSlash(url.pathname);
  const want = trimSlash(requested.pathname);
  return have === want || have === '' || want.startsWith(`${have}/`);
}

/** RFC 8414 §3.1, RFC 9728 §3.1: a terminating "/" is removed before the well-known string is inserted. */
function trimSlash(path: string): string {
  return path.replace(/\/+$/, '');
}

/** A URL for messages: origin and path, never the query (some MCP URLs carry keys there). */
function safe(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

function duration(value: number, name: string): number {
  if (!Number.isFinite(value) || value < 0) throw new TypeError(`discovery: ${name} must be a non-negative number of milliseconds`);
  return value;
}
