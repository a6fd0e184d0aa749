/**
 * The upstream OAuth flow: connecting one user's session to an upstream MCP server
 * that trusts its own authorization server, and keeping that connection alive.
 *
 * - `startFlow`: discovery (RFC 9728 → RFC 8414), a client at that server, a single-use state
 *   with a server-side PKCE verifier, bound to the user, the session and the upstream; answers
 *   with the `AuthRequired` signal whose URL points at our `/oauth/upstream/start`, never at the
 *   upstream server and never with a credential in it. Concurrent requests share one pending flow.
 * - `complete`: the callback's RFC 9207 `iss` check and the code exchange with PKCE and RFC 8707
 *   `resource`, the token stored for (session, upstream).
 * - `refresh`: RFC 6749 §6, one in flight per (session, upstream) across the fleet; a 4xx drops
 *   the row (the user must connect again), a 5xx keeps it and answers 503 (an outage is never a
 *   disconnect). The row is replaced or dropped only while it still holds the refresh token used.
 * - `disconnect`: forgets the token and revokes it at the upstream (RFC 7009) where supported.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createSingleFlight, type SingleFlight } from '../credentials/single-flight.ts';
import { BadGateway, ServiceUnavailable } from '../http/errors.ts';
import { retryOnOutage } from '../store/retry.ts';
import type { Logger } from '../observability/logger.ts';
import type { Counter } from '../observability/metrics.ts';
import { NOOP_TRACER, type Tracer } from '../observability/tracing.ts';
import { authRequiredMessage, connectScopeFor, type AuthRequired } from './auth-required.ts';
import type { ClientRegistration } from './client-registration.ts';
import type { Discovery } from './discovery.ts';
import type { UpstreamFlow, UpstreamToken } from './records.ts';
import type { UpstreamStores } from './stores.ts';
import { requestToken, revokeToken, TokenEndpointError, type TokenFetch, type TokenResponse } from './token-endpoint.ts';

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

/** Options of {@link UpstreamFlows.startFlow}. */
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

/** Why an authorization response could not be turned into a token. Shown on the callback's error page. */
export type FlowFailure = 'access_denied' | 'authorization_error' | 'iss_mismatch' | 'iss_missing' | 'invalid_response' | 'exchange_failed';

/** Thrown by `complete`; `message` is safe to show (no code, no token, no upstream free text). */
export class FlowError extends Error {
  override name = 'FlowError';
  readonly failure: FlowFailure;
  constructor(failure: FlowFailure, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.failure = failure;
  }
}

/** The upstream refused the refresh token (4xx): the row is gone, a new flow is needed. */
export class RefreshRejectedError extends Error {
  override name = 'RefreshRejectedError';
}

/** Options of {@link createUpstreamFlows}; validated when it is called. */
export interface UpstreamFlowsOptions {
  stores: UpstreamStores;
  discovery: Discovery;
  registration: ClientRegistration;
  /** The SSRF-guarded fetcher, for token and revocation endpoints. */
  fetch: TokenFetch;
  /** Our public URL (issuer), the base of `/oauth/upstream/start`. */
  publicUrl: string;
  /** Lifetime of a pending flow, in milliseconds. Default 600000 (10 min). */
  flowTtlMs?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
  /**
   * `mcpgate_auth_flows_total{upstream, outcome}` (started, completed, failed) and
   * `mcpgate_token_refreshes_total{kind="oauth", upstream, outcome}` (see {@link RefreshOutcome}).
   * Default: not counted. A refused issuer (a preconfigured client's upstream naming another
   * authorization server) counts as `outcome="issuer_refused"`.
   */
  metrics?: { authFlows: Counter; refreshes: Counter };
  /**
   * Keeps refreshes to one per (session, upstream) in flight: in process by default, across the
   * fleet with `createFleetSingleFlight` (a rotating refresh token used twice revokes the grant).
   */
  singleFlight?: SingleFlight;
  /** Where refusals worth an operator's attention are logged (a refused issuer). Default: not logged. */
  logger?: Pick<Logger, 'warn'>;
  /** With tracing on, each refresh is a span `refresh oauth` under the request's credential span. Default off. */
  tracer?: Tracer;
}

/**
 * How a refresh at an upstream's token endpoint ended: `success`; `rejected` (4xx: the row is
 * dropped); `superseded` (refused, but another replica had already rotated it: its successor is
 * used); `unavailable` (5xx or transport: the row is kept); `error` (anything else, e.g. the store).
 */
export type RefreshOutcome = 'success' | 'rejected' | 'superseded' | 'unavailable' | 'error';

/** See {@link createUpstreamFlows}. */
export interface UpstreamFlows {
  /** Returns the session's pending flow for the upstream when it covers the scopes, else starts one. @throws BadGateway when discovery or registration fails. */
  startFlow(options: StartFlowOptions): Promise<AuthRequired>;
  /** The URL of the upstream server's authorization endpoint for this flow (RFC 6749 §4.1.1, PKCE S256, RFC 8707). */
  authorizationUrl(flow: UpstreamFlow): string;
  /**
   * Turns the callback's parameters into a stored token. Call after the state was taken.
   * @throws FlowError
   */
  complete(flow: UpstreamFlow, params: URLSearchParams, signal?: AbortSignal): Promise<UpstreamToken>;
  /** The session's token for an upstream, if connected. */
  token(sessionId: string, upstream: string): Promise<UpstreamToken | undefined>;
  /**
   * Refreshes the session's token for an upstream; one refresh in flight per (session, upstream)
   * across the fleet (the `singleFlight` option). With `stale`, the stored row is checked again
   * inside the flight and returned as is when `stale` says it is fine (another request, maybe on
   * another replica, refreshed it meanwhile): that is what keeps a race at one token request.
   * @throws RefreshRejectedError (row dropped) or ServiceUnavailable (row kept).
   */
  refresh(sessionId: string, upstream: string, stale?: (token: UpstreamToken) => boolean): Promise<UpstreamToken>;
  /** Forgets the token and revokes it at the upstream (RFC 7009) when it lists a revocation endpoint. */
  disconnect(sessionId: string, upstream: string): Promise<{ connected: boolean; revoked: boolean }>;
  /**
   * Logout: forgets (and revokes) every upstream token of a session. Resolves with how many rows
   * were forgotten and how many of them the upstream's authorization server confirmed revoked
   * (a server without a revocation endpoint, or one that failed, leaves the grant to expire there).
   */
  forgetSession(sessionId: string): Promise<{ forgotten: number; revoked: number }>;
}

const FLOW_TTL_MS = 10 * 60_000;
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

/** Creates the flow engine. */
export function createUpstreamFlows(options: UpstreamFlowsOptions): UpstreamFlows {
  const { stores, discovery, registration, fetch } = options;
  const base = options.publicUrl.replace(/\/+$/, '');
  const now = options.now ?? Date.now;
  const flowTtlMs = options.flowTtlMs ?? FLOW_TTL_MS;
  if (!Number.isSafeInteger(flowTtlMs) || flowTtlMs <= 0) throw new TypeError('upstream flows: flowTtlMs must be a positive integer');
  const NOT_COUNTED: Counter = { inc: () => undefined };
  const { authFlows, refreshes } = options.metrics ?? { authFlows: NOT_COUNTED, refreshes: NOT_COUNTED };
  const starting = new Map<string, Promise<AuthRequired>>();
  const singleFlight = options.singleFlight ?? createSingleFlight();
  const tracer = options.tracer ?? NOOP_TRACER;

  function signal(flow: UpstreamFlow): AuthRequired {
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

  async function createFlow(o: StartFlowOptions, requested: string[], replacing: string | undefined): Promise<AuthRequired> {
    const { upstream, principal } = o;
    let flow: UpstreamFlow;
    try {
      const resource = await discovery.discoverResource(upstream.url, o.challenge);
      const server = await discovery.discoverAuthorizationServer(chooseIssuer(upstream, resource.authorization_servers));
      const scopes = requested.length > 0 ? requested : cleanScopes(resource.scopes_supported ?? []);
      const client = await registration.clientFor({ upstream, server, scopes });
      const created = now();
      flow = {
        flowId: randomBytes(24).toString('base64url'),
        state: randomBytes(32).toString('base64url'),
        codeVerifier: randomBytes(32).toString('base64url'),
        subject: principal.subject,
        sessionId: principal.sessionId,
        upstream: upstream.name,
        resource: upstream.url,
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
        expiresAt: created + flowTtlMs,
      };
    } catch (err) {
      if (err instanceof IssuerRefusedError) {
        authFlows.inc({ upstream: upstream.name, outcome: 'issuer_refused' });
        options.logger?.warn({ msg: 'upstream names an authorization server other than the configured issuer: refused', upstream: upstream.name, configured: upstream.issuer, named: err.named });
        throw new BadGateway(`upstream "${upstream.name}" needs authorization at its own server, but ${err.message}`, { cause: err });
      }
      if (err instanceof Error && (err.name === 'DiscoveryError' || err.name === 'ClientRegistrationError')) {
        // A flow that cannot even start (its server cannot be discovered or registered at) has failed.
        authFlows.inc({ upstream: upstream.name, outcome: 'failed' });
        throw new BadGateway(`upstream "${upstream.name}" needs authorization at its own server, but ${err.message}`, { cause: err });
      }
      throw err;
    }
    await stores.flows.put(flow);
    if (await stores.flows.claimPending(flow, replacing)) {
      authFlows.inc({ upstream: upstream.name, outcome: 'started' });
      return signal(flow);
    }
    // Another request (maybe on another replica) started one first: share it.
    const winner = await stores.flows.pending(principal.sessionId, upstream.name);
    return signal(winner ?? flow);
  }

  async function start(o: StartFlowOptions, requested: string[]): Promise<AuthRequired> {
    const pending = await stores.flows.pending(o.principal.sessionId, o.upstream.name);
    // Shared only when it ends the same way: a chained authorization must get its browser back.
    if (pending && pending.returnTo === o.returnTo && requested.every((s) => pending.scopes.includes(s))) return signal(pending);
    return createFlow(o, requested, pending?.flowId);
  }

  async function refreshOnce(sessionId: string, upstream: string, stale: ((token: UpstreamToken) => boolean) | undefined): Promise<UpstreamToken> {
    // Read inside the flight: another request, on any replica, may have refreshed since the caller looked.
    const current = await stores.tokens.read(sessionId, upstream);
    if (!current) throw new RefreshRejectedError(`no token for upstream "${upstream}"`);
    if (stale && !stale(current.token)) return current.token;
    if (!current.token.refreshToken) throw new RefreshRejectedError(`the token for upstream "${upstream}" cannot be refreshed`);
    const counted = { outcome: 'error' as RefreshOutcome };
    try {
      return await refreshRow(sessionId, upstream, current, counted);
    } finally {
      refreshes.inc({ kind: 'oauth', upstream, outcome: counted.outcome });
    }
  }

  /** The token request of a refresh; sets `counted.outcome` as it learns how it ended. */
  async function refreshRow(
    sessionId: string,
    upstream: string,
    { token: row, version }: { token: UpstreamToken; version: string },
    counted: { outcome: RefreshOutcome },
  ): Promise<UpstreamToken> {
    let response: TokenResponse;
    try {
      response = await requestToken({
        fetch,
        endpoint: row.server.tokenEndpoint,
        client: row.client,
        params: { grant_type: 'refresh_token', refresh_token: row.refreshToken!, resource: row.resource },
      });
    } catch (err) {
      if (!(err instanceof TokenEndpointError)) throw err;
      if (err.kind === 'unavailable') {
        counted.outcome = 'unavailable';
        throw new ServiceUnavailable(`the authorization server of upstream "${upstream}" is unavailable; retry shortly`, {
          headers: { 'retry-after': '5' },
          cause: err,
        });
      }
      // Another replica may have refreshed (and rotated) first, e.g. after outliving its lock: its successor is in the store.
      const latest = await stores.tokens.read(sessionId, upstream);
      if (latest && latest.token.refreshToken !== row.refreshToken) {
        counted.outcome = 'superseded';
        return latest.token;
      }
      // Only the row holding the refused refresh token goes: never one written meanwhile (compare-and-delete).
      if (latest) await stores.tokens.takeIf(sessionId, upstream, latest.version);
      await forgetUnknownClient(row.server.issuer, row.client, err);
      counted.outcome = 'rejected';
      throw new RefreshRejectedError(`the authorization server of upstream "${upstream}" refused the refresh token (${err.oauthError ?? 'rejected'})`, { cause: err });
    }
    const refreshed: UpstreamToken = {
      ...row,
      accessToken: response.accessToken,
      // RFC 6749 §6: a server that issues no new refresh token leaves the old one valid.
      refreshToken: response.refreshToken ?? row.refreshToken,
      expiresAt: response.expiresIn === undefined ? undefined : now() + response.expiresIn * 1000,
      scopes: response.scopes ?? row.scopes,
      obtainedAt: now(),
    };
    // The server may have retired the old refresh token already: the new one exists only here until
    // saved, so a store hiccup is retried rather than answered (the next refresh would be a replay).
    const saved = await retryOnOutage(() => saveRefreshed(sessionId, refreshed, version));
    counted.outcome = 'success';
    return saved;
  }

  /** Replaces the row the refresh started from (compare-and-set), or settles what replaced it. */
  async function saveRefreshed(sessionId: string, refreshed: UpstreamToken, version: string): Promise<UpstreamToken> {
    if (await stores.tokens.replace(sessionId, refreshed, version)) return refreshed;
    const latest = await stores.tokens.read(sessionId, refreshed.upstream);
    // An earlier attempt that timed out may have been written after all.
    if (latest?.token.accessToken === refreshed.accessToken) return latest.token;
    if (!latest) {
      // Disconnected or logged out during the refresh: the new grant must not outlive that.
      await revokeAll(refreshed).catch(() => false);
      throw new RefreshRejectedError(`the connection to upstream "${refreshed.upstream}" was removed during the refresh`);
    }
    // A newer row (a new connection, a step-up) is kept; it is at least as good as ours.
    return latest.token;
  }

  async function revokeAll(row: UpstreamToken): Promise<boolean> {
    const endpoint = row.server.revocationEndpoint;
    if (!endpoint) return false;
    // RFC 7009 §2.1: revoking the refresh token ends the grant, and the server SHOULD invalidate
    // the access tokens issued under it (a structured JWT access token often cannot be revoked on its own).
    const [token, tokenTypeHint] = row.refreshToken ? [row.refreshToken, 'refresh_token' as const] : [row.accessToken, 'access_token' as const];
    return revokeToken({ fetch, endpoint, client: row.client, token, tokenTypeHint });
  }

  /**
   * `invalid_client` for a dynamically registered client means the server dropped our
   * registration (expired, deleted): the cached one is forgotten so the next flow registers again.
   * True when the error was that.
   */
  async function forgetUnknownClient(issuer: string, client: UpstreamToken['client'], err: TokenEndpointError): Promise<boolean> {
    if (err.oauthError !== 'invalid_client' || client.source !== 'dcr') return false;
    await registration.forgetClient({ issuer, clientId: client.clientId });
    return true;
  }

  /** The callback's checks and the code exchange of `complete`, uncounted. */
  async function exchangeCode(flow: UpstreamFlow, params: URLSearchParams, abort: AbortSignal | undefined): Promise<UpstreamToken> {
    const iss = params.get('iss');
    // RFC 9207 §2.4: an `iss` that differs means the response came from another server (mix-up).
    if (iss !== null && iss !== flow.server.issuer) {
      throw new FlowError('iss_mismatch', 'the authorization response came from a different authorization server than the one this flow was started with');
    }
    if (iss === null && flow.server.issParameterSupported) {
      throw new FlowError('iss_missing', 'the authorization server promises an "iss" parameter in its responses, and this response has none');
    }
    const error = params.get('error');
    if (error !== null) {
      if (error === 'access_denied') throw new FlowError('access_denied', `access to "${flow.upstream}" was not granted`);
      throw new FlowError('authorization_error', `the authorization server of "${flow.upstream}" answered with the error "${error.replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 64)}"`);
    }
    const code = params.get('code');
    if (!code) throw new FlowError('invalid_response', 'the authorization response has no code');
    let response: TokenResponse;
    try {
      response = await requestToken({
        fetch,
        endpoint: flow.server.tokenEndpoint,
        client: flow.client,
        params: {
          grant_type: 'authorization_code',
          code,
          redirect_uri: registration.redirectUri,
          code_verifier: flow.codeVerifier,
          resource: flow.resource,
        },
        signal: abort,
      });
    } catch (err) {
      if (!(err instanceof TokenEndpointError)) throw err;
      // The code was issued to the registration the server has now forgotten: no new registration
      // can redeem it, so the user starts again, and that flow registers anew.
      if (await forgetUnknownClient(flow.server.issuer, flow.client, err)) {
        throw new FlowError('exchange_failed', `the authorization server of "${flow.upstream}" no longer knows this gateway's registration; it has been renewed: start again from your agent`, { cause: err });
      }
      throw new FlowError('exchange_failed', `the code could not be exchanged: ${err.message}`, { cause: err });
    }
    const token: UpstreamToken = {
      upstream: flow.upstream,
      resource: flow.resource,
      server: flow.server,
      client: flow.client,
      scopes: response.scopes ?? flow.scopes,
      accessToken: response.accessToken,
      refreshToken: response.refreshToken,
      expiresAt: response.expiresIn === undefined ? undefined : now() + response.expiresIn * 1000,
      obtainedAt: now(),
    };
    await stores.tokens.put(flow.sessionId, token);
    return token;
  }

  return {
    startFlow(o) {
      // Only a path of ours: the callback redirects there, so anything else would be an open redirect.
      if (o.returnTo !== undefined && !/^\/(?![/\\])[^\s\\]*$/.test(o.returnTo)) return Promise.reject(new TypeError('returnTo must be a path under our public URL'));
      const requested = cleanScopes([...o.upstream.scopes, ...(o.challenge?.scope ?? []), ...(o.scopes ?? [])]);
      const key = [o.principal.sessionId, o.upstream.name, o.returnTo ?? '', ...[...requested].sort()].join('\n');
      const inFlight = starting.get(key);
      if (inFlight) return inFlight;
      const promise = start(o, requested).finally(() => starting.delete(key));
      starting.set(key, promise);
      return promise;
    },

    authorizationUrl(flow) {
      const url = new URL(flow.server.authorizationEndpoint);
      const params = url.searchParams;
      params.set('response_type', 'code');
      params.set('client_id', flow.client.clientId);
      params.set('redirect_uri', registration.redirectUri);
      params.set('state', flow.state);
      params.set('code_challenge', createHash('sha256').update(flow.codeVerifier).digest('base64url'));
      params.set('code_challenge_method', 'S256');
      if (flow.scopes.length > 0) params.set('scope', flow.scopes.join(' '));
      params.set('resource', flow.resource);
      return url.href;
    },

    async complete(flow, params, abort) {
      try {
        const token = await exchangeCode(flow, params, abort);
        authFlows.inc({ upstream: flow.upstream, outcome: 'completed' });
        return token;
      } catch (err) {
        authFlows.inc({ upstream: flow.upstream, outcome: 'failed' });
        throw err;
      }
    },

    token: (sessionId, upstream) => stores.tokens.get(sessionId, upstream),

    refresh(sessionId, upstream, stale) {
      // Not tied to any caller's AbortSignal: every waiting request shares this refresh.
      return singleFlight(`refresh:oauth:${sessionId}:${upstream}`, () =>
        tracer.trace('refresh oauth', (span) => (span.set('mcpgate.upstream', upstream), refreshOnce(sessionId, upstream, stale))),
      );
    },

    async disconnect(sessionId, upstream) {
      const row = await stores.tokens.take(sessionId, upstream);
      if (!row) return { connected: false, revoked: false };
      return { connected: true, revoked: await revokeAll(row) };
    },

    async forgetSession(sessionId) {
      const rows = await stores.tokens.forgetSession(sessionId);
      const revoked = await Promise.all(rows.map(revokeAll));
      return { forgotten: rows.length, revoked: revoked.filter(Boolean).length };
    },
  };
}

/** Scopes from config and from upstream challenges: valid RFC 6749 §3.3 tokens, deduplicated, bounded. */
export function cleanScopes(scopes: readonly string[]): string[] {
  return [...new Set(scopes.filter((s) => typeof s === 'string' && SCOPE_TOKEN.test(s)))].slice(0, MAX_SCOPES);
}
