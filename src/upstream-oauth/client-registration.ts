/**
 * Our client at an upstream's authorization server, chosen in the order of the MCP
 * authorization spec (2025-11-25, "Client Registration Approaches"):
 * 1. a client id (and secret) preconfigured for the upstream;
 * 2. our Client ID Metadata Document (draft-ietf-oauth-client-id-metadata-document): the gateway
 *    serves its metadata at a stable https URL and uses that URL as `client_id`, where the server
 *    advertises `client_id_metadata_document_supported`;
 * 3. RFC 7591 dynamic registration, cached per (our issuer, their issuer, redirect URI, scopes)
 *    and renewed before `client_secret_expires_at`. The registration access token and client
 *    URI the server returns (RFC 7592 §3) are kept with it, sealed, so the registration can be
 *    deleted there (`mcpgate upstreams deregister`). A registration the server no longer knows
 *    (`invalid_client` at its token endpoint) is forgotten, and the next flow registers again.
 */
import { createHash } from 'node:crypto';
import { createSingleFlight, type SingleFlight } from '../credentials/single-flight.ts';
import { FetchRefusedError, type GuardedRequest, type GuardedResponse } from '../net/guarded-fetch.ts';
import type { AuthorizationServerMetadata } from './discovery.ts';
import type { DcrRegistration, TokenEndpointAuthMethod, UpstreamClient } from './records.ts';
import type { RegistrationKey, UpstreamStores } from './stores.ts';

/** Why no client could be had. `message` names the server's host and error code, never a secret. */
export class ClientRegistrationError extends Error {
  override name = 'ClientRegistrationError';
  readonly code: 'registration_unsupported' | 'registration_failed';
  constructor(code: ClientRegistrationError['code'], message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Options of {@link createClientRegistration}; validated when it is called. */
export interface ClientRegistrationOptions {
  /** The SSRF-guarded fetcher. */
  fetch: (url: string, init?: GuardedRequest) => Promise<GuardedResponse>;
  stores: Pick<UpstreamStores, 'registrations'>;
  /** Our public URL (the issuer), e.g. `https://mcp.example.com` or `https://example.com/gw`. */
  publicUrl: string;
  /** `client_name` we register and publish. Default `mcpgate`. */
  clientName?: string;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
  /**
   * Keeps dynamic registrations to one per cache key in flight: in process by default, across the
   * fleet with `createFleetSingleFlight` (one client per issuer for every replica, not one each).
   */
  singleFlight?: SingleFlight;
}

/** What an upstream's config says about its client. */
export interface UpstreamClientConfig {
  name: string;
  clientId?: string;
  clientSecret?: string;
  /** The issuer `clientId` belongs to; the preconfigured client is used at no other server. */
  issuer?: string;
}

/** See {@link createClientRegistration}. */
export interface ClientRegistration {
  /** `{publicUrl}/oauth/client-metadata.json`: our CIMD URL, and our `client_id` where CIMD is used. */
  readonly metadataUrl: string;
  /** `{publicUrl}/oauth/upstream/callback`: the one redirect URI of every upstream client. */
  readonly redirectUri: string;
  /** The Client ID Metadata Document served at `metadataUrl`. */
  metadataDocument(): Record<string, unknown>;
  /** Our client at `server` for `upstream`; registers (and caches) when it must. */
  clientFor(options: { upstream: UpstreamClientConfig; server: AuthorizationServerMetadata; scopes: readonly string[] }): Promise<UpstreamClient>;
  /**
   * Forgets our cached registrations at `issuer` that hold `clientId` (the server answered
   * `invalid_client` for it: expired or deleted), so the next `clientFor` registers again — once
   * for the fleet: a registration another replica already made in its place is kept. Returns how many were dropped.
   */
  forgetClient(options: { issuer: string; clientId: string }): Promise<number>;
  /**
   * Deletes every registration of ours at `issuer` there (RFC 7592 §2.3: DELETE on the
   * registration client URI with the registration access token) and forgets it here.
   */
  deregister(options: { issuer: string }): Promise<Deregistration[]>;
}

/** What `deregister` did with one registration. */
export interface Deregistration {
  clientId: string;
  /**
   * `deleted`: the server confirmed (204, or 401/403/404: it no longer knows the client or its token);
   * `not_manageable`: the server gave no registration access token or URI, so only our copy is forgotten;
   * `failed`: the server could not be reached or answered otherwise; our copy is kept (run it again).
   */
  outcome: 'deleted' | 'not_manageable' | 'failed';
  /** For `failed`: the status or transport problem (no secret). */
  detail?: string;
}

const REGISTRATION_MAX_BYTES = 64 * 1024;

/** What the client chooser works with, derived once from its options by {@link createClientRegistration}. */
interface RegistrationContext {
  fetch: ClientRegistrationOptions['fetch'];
  stores: Pick<UpstreamStores, 'registrations'>;
  /** Our public URL without a trailing slash: our issuer, and the `client_uri` we publish. */
  base: string;
  clientName: string;
  metadataUrl: string;
  redirectUri: string;
  now: () => number;
  singleFlight: SingleFlight;
}

/** Creates the client chooser; see the module comment for the order. */
export function createClientRegistration(options: ClientRegistrationOptions): ClientRegistration {
  if (typeof options.fetch !== 'function') throw new TypeError('client registration: fetch is required');
  const base = options.publicUrl.replace(/\/+$/, '');
  if (!URL.canParse(base)) throw new TypeError('client registration: publicUrl must be an absolute URL');
  const ctx: RegistrationContext = {
    fetch: options.fetch,
    stores: options.stores,
    base,
    clientName: options.clientName ?? 'mcpgate',
    metadataUrl: `${base}/oauth/client-metadata.json`,
    redirectUri: `${base}/oauth/upstream/callback`,
    now: options.now ?? Date.now,
    singleFlight: options.singleFlight ?? createSingleFlight(),
  };
  // The CIMD draft (§3) and the MCP spec require an https client_id URL with a path; a dev-mode
  // gateway on http falls back to DCR.
  const cimdUsable = ctx.metadataUrl.startsWith('https://');
  const document = metadataDocument(ctx);

  return {
    metadataUrl: ctx.metadataUrl,
    redirectUri: ctx.redirectUri,
    forgetClient: (o) => forgetClient(ctx, o),
    deregister: (o) => deregister(ctx, o),
    metadataDocument: () => ({ ...document, redirect_uris: [...document.redirect_uris], grant_types: [...document.grant_types], response_types: [...document.response_types] }),
    async clientFor({ upstream, server, scopes }) {
      if (upstream.clientId !== undefined) return preconfiguredClient({ ...upstream, clientId: upstream.clientId }, server);
      if (cimdUsable && server.client_id_metadata_document_supported === true) {
        return { clientId: ctx.metadataUrl, authMethod: 'none', source: 'cimd' };
      }
      return register(ctx, upstream, server, scopes);
    },
  };
}

/** Our Client ID Metadata Document, frozen (the CIMD draft §4). */
function metadataDocument(ctx: RegistrationContext) {
  return Object.freeze({
    client_id: ctx.metadataUrl,
    client_name: ctx.clientName,
    client_uri: ctx.base,
    redirect_uris: [ctx.redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    // A metadata document cannot carry a secret (CIMD draft §4.1): the client is public, PKCE protects the code.
    token_endpoint_auth_method: 'none',
  });
}

/** The client configured for the upstream, handed out only at the server it was configured for. */
function preconfiguredClient(upstream: UpstreamClientConfig & { clientId: string }, server: AuthorizationServerMetadata): UpstreamClient {
  // The flow already refused other servers (flow-start.ts chooseIssuer); this is the last point
  // before the client id and secret are handed out, so it checks again.
  if (upstream.issuer === undefined || server.issuer.replace(/\/+$/, '') !== upstream.issuer.replace(/\/+$/, '')) {
    throw new ClientRegistrationError('registration_failed', `the preconfigured client of upstream "${upstream.name}" belongs to another authorization server than ${hostOf(server.issuer)}`);
  }
  const authMethod = upstream.clientSecret === undefined ? 'none' : secretAuthMethod(server);
  return { clientId: upstream.clientId, clientSecret: upstream.clientSecret, authMethod, source: 'preconfigured' };
}

/** RFC 7591: our cached registration at `server` for these scopes, else a new one (one at a time per key, fleet-wide). */
async function register(ctx: RegistrationContext, upstream: UpstreamClientConfig, server: AuthorizationServerMetadata, scopes: readonly string[]): Promise<UpstreamClient> {
  const endpoint = server.registration_endpoint;
  if (endpoint === undefined) {
    throw new ClientRegistrationError(
      'registration_unsupported',
      `the authorization server ${server.issuer} of upstream "${upstream.name}" offers neither client ID metadata documents nor dynamic registration; configure clientId for it`,
    );
  }
  const cacheKey: RegistrationKey = { ourIssuer: ctx.base, issuer: server.issuer, redirectUri: ctx.redirectUri, scopes };
  const cached = await cachedClient(ctx, cacheKey);
  if (cached) return cached;
  const flightKey = `dcr:${createHash('sha256').update(JSON.stringify([server.issuer, [...new Set(scopes)].sort()])).digest('base64url')}`;
  // The losers of a race (on any replica) find the winner's registration in the cache.
  return ctx.singleFlight(flightKey, async () => (await cachedClient(ctx, cacheKey)) ?? registerAt(ctx, endpoint, cacheKey, server, scopes));
}

/** The cached registration for `cacheKey`, unless its secret has expired. */
async function cachedClient(ctx: RegistrationContext, cacheKey: RegistrationKey): Promise<UpstreamClient | undefined> {
  const cached = await ctx.stores.registrations.get(cacheKey);
  if (cached && (cached.secretExpiresAt === undefined || cached.secretExpiresAt > ctx.now())) {
    return { clientId: cached.clientId, clientSecret: cached.clientSecret, authMethod: cached.authMethod, source: 'dcr' };
  }
  return undefined;
}

/** RFC 7591 §3.1: registers at `endpoint`, checks the answer and caches it. */
async function registerAt(
  ctx: RegistrationContext,
  endpoint: string,
  cacheKey: RegistrationKey,
  server: AuthorizationServerMetadata,
  scopes: readonly string[],
): Promise<UpstreamClient> {
  const requestBody: Record<string, unknown> = {
    client_name: ctx.clientName,
    client_uri: ctx.base,
    redirect_uris: [ctx.redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: preferredAuthMethod(server),
  };
  if (scopes.length > 0) requestBody.scope = scopes.join(' ');

  let res: GuardedResponse;
  try {
    res = await ctx.fetch(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(requestBody),
      maxBytes: REGISTRATION_MAX_BYTES,
    });
  } catch (err) {
    const detail = err instanceof FetchRefusedError ? err.reason : 'request failed';
    throw new ClientRegistrationError('registration_failed', `dynamic registration at ${hostOf(endpoint)} failed (${detail})`, { cause: err });
  }
  const body = parseObject(res);
  if (res.status !== 201 && res.status !== 200) {
    throw new ClientRegistrationError('registration_failed', `dynamic registration at ${hostOf(endpoint)} was refused: ${res.status} ${oauthErrorCode(body)}`);
  }
  const registration = checkRegistration(body, endpoint);
  await ctx.stores.registrations.put(cacheKey, { ...registration, registeredAt: ctx.now() });
  return { clientId: registration.clientId, clientSecret: registration.clientSecret, authMethod: registration.authMethod, source: 'dcr' };
}

/** See {@link ClientRegistration.forgetClient}. */
async function forgetClient(ctx: RegistrationContext, { issuer, clientId }: { issuer: string; clientId: string }): Promise<number> {
  let dropped = 0;
  for (const { id, registration } of await ctx.stores.registrations.atIssuer(ctx.base, issuer)) {
    if (registration.clientId === clientId && (await ctx.stores.registrations.forget(ctx.base, issuer, id, clientId))) dropped++;
  }
  return dropped;
}

/** See {@link ClientRegistration.deregister}. */
async function deregister(ctx: RegistrationContext, { issuer }: { issuer: string }): Promise<Deregistration[]> {
  const results: Deregistration[] = [];
  for (const { id, registration } of await ctx.stores.registrations.atIssuer(ctx.base, issuer)) {
    const result = await deleteAt(ctx, registration);
    if (result.outcome !== 'failed') await ctx.stores.registrations.forget(ctx.base, issuer, id, registration.clientId);
    results.push(result);
  }
  return results;
}

/** RFC 7592 §2.3: deletes one registration at the server, with its registration access token. */
async function deleteAt(ctx: RegistrationContext, registration: DcrRegistration): Promise<Deregistration> {
  const { clientId, registrationAccessToken: token, registrationClientUri: uri } = registration;
  if (!token || !uri) return { clientId, outcome: 'not_manageable' };
  let res: GuardedResponse;
  try {
    res = await ctx.fetch(uri, { method: 'DELETE', headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, maxBytes: REGISTRATION_MAX_BYTES });
  } catch (err) {
    return { clientId, outcome: 'failed', detail: err instanceof FetchRefusedError ? err.reason : 'request failed' };
  }
  // RFC 7592 §2.3: 204 deleted; 401 (and 403/404 in practice) means the client or its token is already gone.
  if (res.status === 204 || res.status === 200 || res.status === 401 || res.status === 403 || res.status === 404) return { clientId, outcome: 'deleted' };
  return { clientId, outcome: 'failed', detail: `${hostOf(uri)} answered ${res.status}` };
}

/** RFC 8414 §2: absent `token_endpoint_auth_methods_supported` means `client_secret_basic`. */
function supportedAuthMethods(server: AuthorizationServerMetadata): string[] {
  const listed = server.token_endpoint_auth_methods_supported;
  return Array.isArray(listed) ? listed.filter((m): m is string => typeof m === 'string') : ['client_secret_basic'];
}

/** A server-side gateway can keep a secret, so it registers as a confidential client when the server allows. */
function preferredAuthMethod(server: AuthorizationServerMetadata): TokenEndpointAuthMethod {
  const supported = supportedAuthMethods(server);
  for (const method of ['client_secret_basic', 'client_secret_post', 'none'] as const) if (supported.includes(method)) return method;
  return 'client_secret_basic';
}

function secretAuthMethod(server: AuthorizationServerMetadata): TokenEndpointAuthMethod {
  const supported = supportedAuthMethods(server);
  return !supported.includes('client_secret_basic') && supported.includes('client_secret_post') ? 'client_secret_post' : 'client_secret_basic';
}

/** RFC 7591 §3.2.1: the registered client as the server answered it. */
function checkRegistration(body: Record<string, unknown> | undefined, endpoint: string) {
  const where = `dynamic registration at ${hostOf(endpoint)}`;
  const bad = (what: string) => new ClientRegistrationError('registration_failed', `${where}: ${what}`);
  if (!body) throw bad('the response is not a JSON object');
  const { client_id: clientId, client_secret: secret, token_endpoint_auth_method: method, client_secret_expires_at: expires } = body;
  const { registration_access_token: rat, registration_client_uri: rcu } = body;
  if (rat !== undefined && (typeof rat !== 'string' || rat.length === 0 || rat.length > 4096)) throw bad('registration_access_token invalid');
  if (rcu !== undefined && (typeof rcu !== 'string' || !/^https?:\/\//.test(rcu) || !URL.canParse(rcu))) throw bad('registration_client_uri invalid');
  if (typeof clientId !== 'string' || clientId.length === 0 || clientId.length > 1024) throw bad('client_id missing or invalid');
  if (secret !== undefined && (typeof secret !== 'string' || secret.length === 0 || secret.length > 4096)) throw bad('client_secret invalid');
  let authMethod: TokenEndpointAuthMethod;
  if (method === undefined) authMethod = secret === undefined ? 'none' : 'client_secret_basic';
  else if (method === 'none' || method === 'client_secret_basic' || method === 'client_secret_post') authMethod = method;
  else throw bad(`token_endpoint_auth_method "${String(method).slice(0, 64)}" is not supported by mcpgate`);
  if (authMethod !== 'none' && secret === undefined) throw bad('a secret-based client was registered without a client_secret');
  if (expires !== undefined && (typeof expires !== 'number' || !Number.isFinite(expires) || expires < 0)) throw bad('client_secret_expires_at invalid');
  return {
    clientId,
    clientSecret: authMethod === 'none' ? undefined : (secret as string),
    authMethod,
    // RFC 7591 §3.2.1: seconds since the epoch, 0 when the secret does not expire.
    secretExpiresAt: typeof expires === 'number' && expires > 0 ? expires * 1000 : undefined,
    // RFC 7592 §3: both or neither; one alone cannot manage anything.
    ...(typeof rat === 'string' && typeof rcu === 'string' ? { registrationAccessToken: rat, registrationClientUri: rcu } : {}),
  };
}

function parseObject(res: GuardedResponse): Record<string, unknown> | undefined {
  try {
    const value = res.json();
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** An OAuth `error` code, reduced to what is safe to log and show. */
export function oauthErrorCode(body: Record<string, unknown> | undefined): string {
  const code = body?.error;
  return typeof code === 'string' && /^[\x20-\x7e]{1,64}$/.test(code) ? code.replace(/[^A-Za-z0-9_.-]/g, '') : 'no error code';
}

function hostOf(url: string): string {
  return URL.canParse(url) ? new URL(url).host : 'an invalid URL';
}
