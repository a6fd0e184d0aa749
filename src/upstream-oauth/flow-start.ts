/**
 * Starting an upstream flow: discovery (RFC 9728 → RFC 8414), a client at that server, a
 * single-use state with a server-side PKCE verifier, bound to the user, the session and the
 * upstream. Answers with the `AuthRequired` signal whose URL points at our `/oauth/upstream/start`,
 * never at the upstream server and never with a credential in it. Concurrent requests share one
 * pending flow: in this process through `starting`, across replicas through the pending-flow claim.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { BadGateway } from '../http/errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { Counter } from '../observability/metrics.ts';
import { authRequiredMessage, connectScopeFor, type AuthRequired } from './auth-required.ts';
import type { ClientRegistration } from './client-registration.ts';
import type { AuthorizationServerMetadata, Discovery } from './discovery.ts';
import type { UpstreamClient, UpstreamFlow } from './records.ts';
import type { UpstreamStores } from './stores.ts';

/** What the flow needs to know about an upstream in mode `oauth`. */
export interface OAuthUpstream {
  name: string;
  /** The upstream MCP endpoint: discovered from, and the RFC 8707 `resource` of every request. */
  url: string;
  /** Configured scopes (`auth.scopes`); asked for in every flow. */
  scopes: readonly string[];
  /** A preconfigured client at the upstream's authorization server. */
  clientId?: string;
  clientSecret?: string;
  /**
   * The issuer of the server that issued `clientId` (required with it, `auth.issuer`): the only
   * authorization server this upstream's flows use. Discovery naming another is refused, so a
   * compromised upstream cannot send our client secret or its users' codes to a server of its choice.
   */
  issuer?: string;
}

/** The user and session a flow is for (a verified `Principal` has both). */
export interface FlowPrincipal {
  subject: string;
  sessionId: string;
}

/** Options of {@link startFlow} (and of `UpstreamFlows.startFlow`). */
export interface StartFlowOptions {
  principal: FlowPrincipal;
  upstream: OAuthUpstream;
  /** Extra scopes to ask for (a step-up's granted ∪ requested). */
  scopes?: readonly string[];
  /** The upstream's parsed Bearer challenge, when a 401/403 started the flow (its `resource_metadata` is tried first). */
  challenge?: { resourceMetadata?: string; scope?: string[] };
  /** The agent's `Mcp-Session-Id`, for `notifications/elicitation/complete`. */
  mcpSessionId?: string;
  /** A path under our public URL to send the browser to after the callback (our `/oauth/authorize` chaining). */
  returnTo?: string;
}

/** What starting a flow needs; `createUpstreamFlows` builds it once, from its validated options. */
export interface StartDeps {
  stores: Pick<UpstreamStores, 'flows'>;
  discovery: Discovery;
  registration: Pick<ClientRegistration, 'clientFor'>;
  /** Our public URL without a trailing slash: the base of `/oauth/upstream/start`. */
  base: string;
  /** Lifetime of a pending flow, in milliseconds. */
  flowTtlMs: number;
  /** The clock, epoch milliseconds. */
  now: () => number;
  /** `mcpgate_auth_flows_total{upstream, outcome}`: `started`, `failed`, `issuer_refused`. */
  authFlows: Counter;
  /** Where a refused issuer is logged. */
  logger?: Pick<Logger, 'warn'>;
  /** The starts in progress in this process, by what they ask for: concurrent callers share one. */
  starting: Map<string, Promise<AuthRequired>>;
}

/** RFC 6749 §3.3 scope-token characters; anything else from a challenge is dropped. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/;
const MAX_SCOPES = 32;

/** A preconfigured client's upstream named only authorization servers other than the configured issuer. */
export class IssuerRefusedError extends Error {
  override name = 'IssuerRefusedError';
  /** The issuers the resource metadata named (shown to operators: they are URLs, not secrets). */
  readonly named: string[];
  constructor(message: string, named: string[]) {
    super(message);
    this.named = named;
  }
}

/**
 * The authorization server a flow uses: the configured issuer of a preconfigured client when the
 * resource metadata names it among its servers, else none (refused, before any request reaches a
 * server the upstream named); without a preconfigured client, the first named (the MCP spec leaves
 * the choice to the client; the first is the one the resource prefers).
 * @throws IssuerRefusedError
 */
export function chooseIssuer(upstream: Pick<OAuthUpstream, 'clientId' | 'issuer'>, named: readonly string[]): string {
  if (upstream.clientId === undefined) return named[0]!;
  if (upstream.issuer === undefined) throw new IssuerRefusedError('its preconfigured client has no configured issuer (auth.issuer)', [...named]);
  const match = named.find((issuer) => sameIssuer(issuer, upstream.issuer!));
  if (match !== undefined) return match;
  const hosts = [...new Set(named.map((n) => (URL.canParse(n) ? new URL(n).host : 'an invalid URL')))].join(', ');
  throw new IssuerRefusedError(`its metadata names an authorization server (${hosts}) other than the one its client is configured for; nothing was sent there`, [...named]);
}

/** Issuer identifiers compare as strings (RFC 8414 §3.3); a trailing slash in the config is forgiven. */
export function sameIssuer(a: string, b: string): boolean {
  return a.replace(/\/+$/, '') === b.replace(/\/+$/, '');
}

/** Scopes from config and from upstream challenges: valid RFC 6749 §3.3 tokens, deduplicated, bounded. */
export function cleanScopes(scopes: readonly string[]): string[] {
  return [...new Set(scopes.filter((s) => typeof s === 'string' && SCOPE_TOKEN.test(s)))].slice(0, MAX_SCOPES);
}

/**
 * Returns the session's pending flow for the upstream when it covers the scopes, else starts one.
 * Rejects with a TypeError for a `returnTo` that is not a path of ours, and with BadGateway when
 * discovery or registration fails.
 */
export function startFlow(deps: StartDeps, o: StartFlowOptions): Promise<AuthRequired> {
  // Only a path of ours: the callback redirects there, so anything else would be an open redirect.
  if (o.returnTo !== undefined && !/^\/(?![/\\])[^\s\\]*$/.test(o.returnTo)) return Promise.reject(new TypeError('returnTo must be a path under our public URL'));
  const requested = cleanScopes([...o.upstream.scopes, ...(o.challenge?.scope ?? []), ...(o.scopes ?? [])]);
  const key = [o.principal.sessionId, o.upstream.name, o.returnTo ?? '', ...[...requested].sort()].join('\n');
  const inFlight = deps.starting.get(key);
  if (inFlight) return inFlight;
  const promise = pendingOrNew(deps, o, requested).finally(() => deps.starting.delete(key));
  deps.starting.set(key, promise);
  return promise;
}

/** The session's pending flow when it can be shared, else a new one that replaces it. */
async function pendingOrNew(deps: StartDeps, o: StartFlowOptions, requested: string[]): Promise<AuthRequired> {
  const pending = await deps.stores.flows.pending(o.principal.sessionId, o.upstream.name);
  // Shared only when it ends the same way: a chained authorization must get its browser back.
  if (pending && pending.returnTo === o.returnTo && requested.every((s) => pending.scopes.includes(s))) return signal(deps.base, pending);
  return createFlow(deps, o, requested, pending?.flowId);
}

/** Prepares a flow, saves it and claims it as the pending one (or shares the one that won the claim). */
async function createFlow(deps: StartDeps, o: StartFlowOptions, requested: string[], replacing: string | undefined): Promise<AuthRequired> {
  const flow = await prepareFlow(deps, o, requested);
  await deps.stores.flows.put(flow);
  if (await deps.stores.flows.claimPending(flow, replacing)) {
    deps.authFlows.inc({ upstream: o.upstream.name, outcome: 'started' });
    return signal(deps.base, flow);
  }
  // Another request (maybe on another replica) started one first: share it.
  const winner = await deps.stores.flows.pending(o.principal.sessionId, o.upstream.name);
  return signal(deps.base, winner ?? flow);
}

/** Discovery, the choice of authorization server, our client there, and the flow record (not yet saved). */
async function prepareFlow(deps: StartDeps, o: StartFlowOptions, requested: string[]): Promise<UpstreamFlow> {
  const { upstream } = o;
  try {
    const resource = await deps.discovery.discoverResource(upstream.url, o.challenge);
    const server = await deps.discovery.discoverAuthorizationServer(chooseIssuer(upstream, resource.authorization_servers));
    const scopes = requested.length > 0 ? requested : cleanScopes(resource.scopes_supported ?? []);
    const client = await deps.registration.clientFor({ upstream, server, scopes });
    return flowRecord(deps, o, { server, client, scopes });
  } catch (err) {
    throw notStarted(deps, upstream, err);
  }
}

/**
 * What a failure to prepare a flow becomes: a refused issuer or a failed discovery or registration
 * is counted and answered 502 (a refused issuer also logged for operators); anything else as it is.
 */
function notStarted(deps: StartDeps, upstream: OAuthUpstream, err: unknown): unknown {
  if (err instanceof IssuerRefusedError) {
    deps.authFlows.inc({ upstream: upstream.name, outcome: 'issuer_refused' });
    deps.logger?.warn({ msg: 'upstream names an authorization server other than the configured issuer: refused', upstream: upstream.name, configured: upstream.issuer, named: err.named });
    return new BadGateway(`upstream "${upstream.name}" needs authorization at its own server, but ${err.message}`, { cause: err });
  }
  if (err instanceof Error && (err.name === 'DiscoveryError' || err.name === 'ClientRegistrationError')) {
    // A flow that cannot even start (its server cannot be discovered or registered at) has failed.
    deps.authFlows.inc({ upstream: upstream.name, outcome: 'failed' });
    return new BadGateway(`upstream "${upstream.name}" needs authorization at its own server, but ${err.message}`, { cause: err });
  }
  return err;
}

/** A new flow record: fresh flow id, state and PKCE verifier, the server's endpoints fixed as discovered. */
function flowRecord(
  deps: StartDeps,
  o: StartFlowOptions,
  { server, client, scopes }: { server: AuthorizationServerMetadata; client: UpstreamClient; scopes: string[] },
): UpstreamFlow {
  const created = deps.now();
  return {
    flowId: randomBytes(24).toString('base64url'),
    state: randomBytes(32).toString('base64url'),
    codeVerifier: randomBytes(32).toString('base64url'),
    subject: o.principal.subject,
    sessionId: o.principal.sessionId,
    upstream: o.upstream.name,
    resource: o.upstream.url,
    server: {
      issuer: server.issuer,
      authorizationEndpoint: server.authorization_endpoint,
      tokenEndpoint: server.token_endpoint,
      revocationEndpoint: server.revocation_endpoint,
      issParameterSupported: server.authorization_response_iss_parameter_supported === true,
    },
    client,
    scopes,
    elicitationId: randomUUID(),
    mcpSessionId: o.mcpSessionId,
    returnTo: o.returnTo,
    createdAt: created,
    expiresAt: created + deps.flowTtlMs,
  };
}

/** The `AuthRequired` signal of a flow: our start URL, never the upstream's. */
function signal(base: string, flow: UpstreamFlow): AuthRequired {
  const authUrl = `${base}/oauth/upstream/start?flow=${encodeURIComponent(flow.flowId)}`;
  return {
    upstream: flow.upstream,
    authUrl,
    flowId: flow.flowId,
    elicitationId: flow.elicitationId,
    message: authRequiredMessage(flow.upstream, authUrl),
    connectScope: connectScopeFor(flow.upstream),
  };
}
