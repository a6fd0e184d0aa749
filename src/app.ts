import { randomBytes } from 'node:crypto';
import { Pool } from 'undici';
import type { DestinationStream } from 'pino';
import { loadSigningKeys } from './authserver/tokens/keys.ts';
import { createMetadataRoutes } from './authserver/metadata.ts';
import { createRevocationRoutes } from './authserver/tokens/revoke.ts';
import { createSessionEnding, type SessionEndedHook } from './authserver/records/session-end.ts';
import { RESOURCE_SCOPES } from './authserver/tokens/scopes.ts';
import { createAuthStores } from './authserver/records/stores.ts';
import { createTokenRoutes } from './authserver/tokens/token.ts';
import { createTokenIssuer } from './authserver/tokens/mint.ts';
import { createCookieCodec, deriveCookieKey, formTokens, loginCookie, type CookieCodec } from './authserver/login/cookies.ts';
import { createCimdResolver } from './authserver/clients/cimd.ts';
import { createConnectChain } from './authserver/login/connect-chain.ts';
import { createStepUpMarks } from './authserver/tokens/step-up.ts';
import { createClientLookup, createKnownClientLookup } from './authserver/clients/lookup.ts';
import { createLoginRoutes } from './authserver/login/login-flow.ts';
import { CLIENT_IDLE_TTL_MS } from './authserver/clients/register.ts';
import { signInUrl } from './authserver/login/sign-in.ts';
import { sendErrorPage } from './authserver/login/html.ts';
import type { Config, UpstreamConfig } from './config/schema.ts';
import { createIdTokenCredential } from './credentials/id-token.ts';
import { createIdpCredential } from './credentials/idp.ts';
import { createIdpSessionTokens, type IdpSessionTokens } from './credentials/idp-session.ts';
import { createNoCredential } from './credentials/none.ts';
import { createFleetSingleFlight, createSingleFlight } from './credentials/single-flight.ts';
import { createOAuthCredential } from './credentials/oauth.ts';
import { createStaticCredential } from './credentials/static.ts';
import { createTokenExchangeCredential } from './credentials/token-exchange.ts';
import type { CredentialSource, Principal } from './credentials/types.ts';
import { openAccess, type Authenticator } from './gateway/authenticate.ts';
import { createAuthRequiredRenderer } from './gateway/challenge.ts';
import { createClientCapabilities } from './gateway/client-capabilities.ts';
import { createElicitationEvents } from './gateway/elicitation-events.ts';
import { createMcpRoutes } from './gateway/mcp-route.ts';
import { createSessionOwners } from './gateway/session-owner.ts';
import { createStreamRegistry } from './gateway/stream-registry.ts';
import { createToolCatalog } from './gateway/tool-catalog.ts';
import type { Upstream } from './gateway/upstream.ts';
import { createJwtAuthenticator } from './gateway/verify-token.ts';
import { createBodyBudget } from './http/body-budget.ts';
import { createOpsRoutes } from './http/ops-routes.ts';
import type { RequestContext, Route } from './http/router.ts';
import { InvalidToken } from './http/errors.ts';
import { applyRouteLimits } from './http/route-limits.ts';
import { createFrontDoor, type FrontDoor } from './http/server.ts';
import { createOAuth2IdpClient } from './idp/oauth2.ts';
import { createOidcIdpClient } from './idp/oidc.ts';
import { createGuardedFetch } from './net/guarded-fetch.ts';
import type { IdpClient } from './idp/types.ts';
import type { IdpTokens } from './authserver/records/records.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { createGatewayMetrics, createRegistry } from './observability/metrics.ts';
import { createMemoryStore } from './store/memory.ts';
import { observeStoreFailures } from './store/observed.ts';
import { createValkeyStore } from './store/valkey.ts';
import { valkeyStoreOptions } from './store/valkey_settings.ts';
import { createMemoryBus, type MessageBus } from './store/bus.ts';
import { createValkeyBus } from './store/valkey_bus.ts';
import type { Store } from './store/port.ts';
import { createSealer } from './store/sealed.ts';
import { createClientRegistration } from './upstream-oauth/client-registration.ts';
import { createDiscovery } from './upstream-oauth/discovery.ts';
import { createUpstreamFlows, type OAuthUpstream } from './upstream-oauth/flow.ts';
import { createUpstreamOAuthRoutes, type BrowserSession } from './upstream-oauth/routes.ts';
import { createUpstreamStores } from './upstream-oauth/stores.ts';

/** A running gateway, as the CLI and the tests hold it. */
export interface App {
  logger: Logger;
  frontDoor: FrontDoor;
  /** Starts listening on `server.listen` (or the given port, 0 for any). Resolves with the base URL bound. */
  listen(override?: { host?: string; port?: number }): Promise<URL>;
  /** Graceful stop (DESIGN §8): stop accepting, let streams finish within `server.drainTimeout`, then close. */
  close(): Promise<void>;
}

export interface AppOptions {
  /** Where log lines go (default stdout); tests capture them. */
  logDestination?: DestinationStream;
  /** The storage backend; default the one `storage.kind` names. Tests pass a memory store on a fake clock. */
  store?: Store;
  /** The company IdP; default the client `idp.kind` names (openid-client against `idp.issuer`, or plain OAuth 2.0). */
  idpClient?: IdpClient;
  /** The clock of the authorization server, the stores and the token checks, epoch ms. Default `Date.now`. */
  now?: () => number;
}

/**
 * The composition root: the only place that chooses concrete parts and wires them
 * (STYLE: one composition root). Everything else receives what it needs as arguments.
 */
export function createApp(config: Config, options: AppOptions = {}): App {
  const logger = createLogger({ level: config.server.logLevel, destination: options.logDestination });
  const registry = createRegistry();
  const metrics = createGatewayMetrics(registry);
  const publicUrl = new URL(config.server.publicUrl);
  const basePath = publicUrl.pathname.replace(/\/+$/, '');
  let draining = false;
  // Aborted when the drain begins: SSE streams end at an event boundary so agents resume elsewhere.
  const drain = new AbortController();
  const now = options.now ?? Date.now;
  /** Our issuer identifier (DESIGN §4): the public URL without a trailing slash. */
  const issuer = `${publicUrl.origin}${basePath}`;

  if (config.server.devMode) logger.warn({ msg: 'devMode is on: http URLs and loopback addresses are allowed; never use it in production' });

  // Storage (DESIGN §7) and the authorization server's domain stores above it.
  if (config.storage.kind === 'valkey' && config.storage.encryptionKeys.length === 0) {
    // A per-process key would make every value unreadable to the other replicas and after a restart.
    throw new Error('storage.encryptionKeys: required with valkey in this build (allowUnencrypted is not supported yet)');
  }
  // Every failed operation is counted, whichever answer (503, an HTML page, /readyz) it ends in.
  const store = observeStoreFailures(options.store ?? storeFor(config, now, logger), (op) => metrics.storeErrors.inc({ op }));
  const sealer = createSealer({
    keys:
      config.storage.encryptionKeys.length > 0
        ? config.storage.encryptionKeys.map((k) => ({ id: k.id, key: Buffer.from(k.key, 'base64') }))
        : // Memory storage dies with the process, and so may its key.
          [{ id: 'ephemeral', key: randomBytes(32) }],
  });
  const authStores = createAuthStores({ store, sealer, now, logger });
  // Sessions answered with the HTTP re-challenge: their next refresh is refused so the agent re-authorizes (step-up.ts).
  const stepUp = createStepUpMarks({ store });
  // Every upstream asks for the base scope (scopes.ts); per-upstream scopes would be decided here.
  const scopesFor = (_name: string): readonly string[] => (config.idp ? RESOURCE_SCOPES : []);
  const resourceOf = (name: string) => `${issuer}/${name}/mcp`;

  // Every server-side fetch (token endpoints, discovery, CIMD) goes through the one SSRF guard (DESIGN §6.1).
  const serverFetch = createGuardedFetch({ allowHttp: config.server.devMode, allowPrivate: config.server.devMode, allowHosts: config.server.allowHosts });

  // Upstreams with their own authorization server (DESIGN §6): each session's connection to them.
  const upstreamStores = createUpstreamStores({ store, sealer, tokenTtlMs: config.authServer.refreshTokenTtl, now });
  // What consumes a one-time value (a rotating refresh token, a registration) runs once at a time:
  // across every replica when they share Valkey, in this process with memory storage.
  const singleFlight = config.storage.kind === 'valkey' ? createFleetSingleFlight({ store }) : createSingleFlight();
  const upstreamClients = createClientRegistration({ fetch: serverFetch, stores: upstreamStores, publicUrl: issuer, now, singleFlight });
  const upstreamFlows = createUpstreamFlows({
    stores: upstreamStores,
    discovery: createDiscovery({ fetch: serverFetch, allowHttp: config.server.devMode, now }),
    registration: upstreamClients,
    fetch: serverFetch,
    publicUrl: issuer,
    now,
    metrics,
    singleFlight,
    logger,
  });
  const oauthUpstreams: OAuthUpstream[] = config.upstreams.flatMap((u) =>
    u.auth.mode === 'oauth'
      ? [{ name: u.name, url: u.url, scopes: u.auth.scopes, clientId: u.auth.clientId, clientSecret: u.auth.clientSecret, issuer: u.auth.issuer }]
      : [],
  );

  // Every way a session ends (logout, revocation, an IdP or upstream that refuses it) also forgets
  // the session's upstream grants and revokes them at their own authorization servers (DESIGN §4).
  const onSessionEnded: SessionEndedHook[] = oauthUpstreams.length > 0 ? [(sid) => upstreamFlows.forgetSession(sid)] : [];
  // The company IdP our login is federated to, by `idp.kind`.
  const idpClient = config.idp ? (options.idpClient ?? createIdpClient(config.idp)) : undefined;
  const endSession = createSessionEnding({
    sessions: authStores.sessions,
    onSessionEnded,
    logger,
    // An IdP with a revocation endpoint: signing out of mcpgate also revokes the IdP's grant.
    ...(idpClient?.revoke && { revokeIdpTokens: (tokens: IdpTokens) => idpClient.revoke!(tokens), idpTokens: authStores.idpTokens }),
  });

  // Login (DESIGN §4, §5): only when the company IdP is configured.
  const login = idpClient ? createLogin(idpClient) : undefined;

  const upstreams: Upstream[] = config.upstreams.map((u) => ({
    name: u.name,
    url: new URL(u.url),
    resource: resourceOf(u.name),
    dispatcher: new Pool(new URL(u.url).origin, {
      keepAliveTimeout: 30_000,
      headersTimeout: config.server.upstreamTimeout,
      bodyTimeout: 0,
      connect: { timeout: Math.min(config.server.upstreamTimeout, 10_000) },
    }),
    credentials: credentialSourceFor(u),
  }));
  for (const u of config.upstreams) {
    if (u.auth.mode === 'static' && !config.idp) {
      logger.warn({ msg: 'static credential exposed without login: anyone who reaches the gateway uses it', upstream: u.name });
    }
  }

  // auth_required channels: what each agent session understands (in the store, for every
  // replica), and this replica's open GET streams, which hear notifications/elicitation/complete
  // from whichever replica ran the upstream callback (over the message bus).
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
    onReauthorize: (principal, scopes) => stepUp.mark(principal.sessionId, scopes),
    drain: drain.signal,
  });

  const frontDoor = createFrontDoor({
    logger,
    metrics,
    publicUrl,
    trustedProxies: config.server.trustedProxies,
    // Every route that works for an unauthenticated request is limited per client and globally (route-limits.ts).
    routes: applyRouteLimits([
      ...createOpsRoutes({
        registry,
        checks: [
          { name: 'store', check: (signal) => store.ping(signal) },
          {
            name: 'events',
            check: async () => {
              if (!elicitationEvents.subscribed) throw new Error('not subscribed to the event bus yet');
            },
          },
        ],
        isDraining: () => draining,
      }),
      ...(login?.routes ?? []),
      ...(login
        ? createUpstreamOAuthRoutes({
            flows: upstreamFlows,
            stores: upstreamStores,
            registration: upstreamClients,
            upstreams: oauthUpstreams,
            browser: login.browser,
            authenticate: (ctx, name) => authenticateForConnections(login.authenticator, ctx, name),
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
        sessionOwners: login ? createSessionOwners({ store, sealer, now }) : undefined,
        // Answers to requests in flight get most of drainTimeout; the last second is for ending them at an event boundary.
        drain: { signal: drain.signal, requestGraceMs: config.server.drainTimeout - Math.min(1000, Math.floor(config.server.drainTimeout / 5)) },
        logUser: config.log.user,
        toolCatalog: createToolCatalog({ maxPerUpstream: 200 }),
      }),
    ], {
      store,
      basePath,
      overrides: config.server.rateLimits,
      sendPage: (ctx, status, title, message, headers) => sendErrorPage(ctx.res, status, title, message, { headers }),
      now,
    }),
  });

  return {
    logger,
    frontDoor,
    async listen(override = {}) {
      // One attempt now; while Valkey is unreachable it goes on in the background and /readyz fails ("events").
      await elicitationEvents.start();
      const [, host = '127.0.0.1', port = '8080'] = /^\[?(.*?)\]?:(\d+)$/.exec(config.server.listen) ?? [];
      const bound = await frontDoor.listen(override.host ?? host, override.port ?? Number(port));
      const shown = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
      logger.info({ msg: 'listening', address: `${shown}:${bound.port}`, publicUrl: publicUrl.href, upstreams: upstreams.map((u) => u.name) });
      return new URL(`http://${shown}:${bound.port}`);
    },
    async close() {
      // /readyz fails from now on; then the listener closes, streams end at an event boundary,
      // requests in flight finish, and whatever is left at drainTimeout is cut.
      draining = true;
      drain.abort();
      await frontDoor.shutdown(config.server.drainTimeout);
      await Promise.all(upstreams.map((u) => u.dispatcher.close().catch(() => undefined)));
      await elicitationEvents.close();
      await bus.close().catch(() => undefined);
      await store.close().catch(() => undefined);
      await serverFetch.close().catch(() => undefined);
      logger.info({ msg: 'stopped' });
    },
  };

  function credentialSourceFor(u: UpstreamConfig): CredentialSource {
    switch (u.auth.mode) {
      case 'none':
        return createNoCredential(u.name);
      case 'static':
        return createStaticCredential({ upstream: u.name, header: u.auth.header, value: u.auth.value });
      case 'idp':
        return createIdpCredential({
          upstream: { name: u.name, resource: resourceOf(u.name), scopes: scopesFor(u.name) },
          session: idpSession(u),
          refreshMarginMs: u.auth.refreshMargin,
        });
      case 'id_token':
        return createIdTokenCredential({
          upstream: { name: u.name, resource: resourceOf(u.name), scopes: scopesFor(u.name) },
          session: idpSession(u),
          endSession,
        });
      case 'token_exchange':
        return createTokenExchangeCredential({
          upstream: { name: u.name, resource: resourceOf(u.name), scopes: scopesFor(u.name) },
          tokenEndpoint: u.auth.tokenEndpoint,
          subjectToken: u.auth.subjectToken,
          audience: u.auth.audience,
          resource: u.auth.resource,
          scopes: u.auth.scopes,
          extraParams: u.auth.extraParams,
          expectedIssuer: u.auth.expectedIssuer,
          clientId: u.auth.clientId,
          clientSecret: u.auth.clientSecret,
          session: idpSession(u),
          endSession,
          fetch: serverFetch,
          logger,
          exchanges: metrics.tokenExchanges,
        });
      case 'oauth':
        return createOAuthCredential({
          upstream: oauthUpstreams.find((o) => o.name === u.name)!,
          flows: upstreamFlows,
          refreshMarginMs: u.auth.refreshMargin,
          now,
        });
      default: {
        // Every mode of the schema is handled above; a new one must be added here.
        const unhandled: never = u.auth;
        throw new Error(`auth mode "${(unhandled as { mode: string }).mode}" of upstream "${u.name}" is not available in this build`);
      }
    }
  }

  function idpSession(u: UpstreamConfig): IdpSessionTokens {
    // The config schema refuses these modes without idp:, so this is a wiring bug if it happens.
    if (!login) throw new Error(`auth mode "${u.auth.mode}" of upstream "${u.name}" needs the idp: section`);
    return login.idpSession;
  }

  /**
   * `/connections` takes our access token for the named upstream, or (listing) for any upstream in
   * mode `oauth`: every such token names the session whose connections it may see.
   */
  async function authenticateForConnections(authenticator: Authenticator, ctx: RequestContext, name: string | undefined): Promise<Principal> {
    const candidates = upstreams.filter((u) => (name === undefined ? oauthUpstreams.some((o) => o.name === u.name) : u.name === name));
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

  function createIdpClient(idpConfig: NonNullable<Config['idp']>): IdpClient {
    const idpOptions = { redirectUri: `${issuer}/oauth/callback`, devMode: config.server.devMode, now };
    return idpConfig.kind === 'oauth2' ? createOAuth2IdpClient({ config: idpConfig, ...idpOptions }) : createOidcIdpClient({ config: idpConfig, ...idpOptions });
  }

  function createLogin(idpClient: IdpClient): {
    routes: Route[];
    authenticator: Authenticator;
    idpSession: IdpSessionTokens;
    cookies: CookieCodec;
    browser: BrowserSession;
  } {
    const keys = loadSigningKeys({ pems: config.authServer.signingKeys, devMode: config.server.devMode, warn: (msg) => logger.warn({ msg }) });
    const resources = config.upstreams.map((u) => ({ name: u.name, resource: resourceOf(u.name), scopes: scopesFor(u.name) }));
    const tokenIssuer = createTokenIssuer({ issuer, keys, accessTokenTtlMs: config.authServer.accessTokenTtl, now });
    // Registered clients, and https client ids as metadata documents when those are on: fetched only
    // by authorize, read from the store by the token and revocation endpoints.
    const cimd = config.authServer.clientMetadataDocuments
      ? createCimdResolver({ fetch: serverFetch, store, sealer, allowHttp: config.server.devMode, retainMs: config.authServer.refreshTokenTtl, now, redirectSchemes: config.authServer.registration.redirectSchemes })
      : undefined;
    const clients = createClientLookup({ stores: authStores, cimd });
    const knownClients = createKnownClientLookup({ stores: authStores, cimd });
    // The sessions' IdP tokens: the idp/id_token credentials use them, and our refresh grant asks
    // the IdP through them whether it still backs the session.
    const idpSession = createIdpSessionTokens({ stores: authStores, idp: idpClient, logger, now, endSession, refreshes: metrics.refreshes, singleFlight });
    const routes: Route[] = [
      ...createMetadataRoutes({
        issuer,
        basePath,
        keys,
        resources,
        dynamicRegistration: config.authServer.registration.dynamic,
        clientMetadataDocuments: config.authServer.clientMetadataDocuments,
      }),
      ...createTokenRoutes({
        basePath,
        stores: authStores,
        issuer: tokenIssuer,
        refreshTokenTtlMs: config.authServer.refreshTokenTtl,
        resolveClient: knownClients,
        retainClient: cimd && ((client) => cimd.retain(client)),
        endSession,
        logger,
        now,
        stepUp,
        sessionMaxLifetimeMs: config.authServer.sessionMaxLifetime,
        idpSession,
      }),
      ...createRevocationRoutes({ basePath, stores: authStores, issuer, keys, resources: resources.map((r) => r.resource), resolveClient: knownClients, endSession, logger, now }),
    ];
    const authenticator = createJwtAuthenticator({
      issuer,
      keys,
      stores: authStores,
      upstreamScopes: new Map(resources.map((r) => [r.name, r.scopes])),
      cacheSize: 10_000,
      now,
    });
    // Our login cookie (DESIGN §4): set by the IdP callback, read wherever a browser must be the
    // user a flow belongs to (the upstream connect links, DESIGN §6.3).
    const cookies = createCookieCodec({
      key: deriveCookieKey({ encryptionKey: config.storage.encryptionKeys[0]?.key, signingKeyPem: config.authServer.signingKeys[0] }).key,
      secure: publicUrl.protocol === 'https:',
      now,
    });
    // The browser leg (DESIGN §4): registration, authorize, the IdP callback and the consent page.
    routes.push(
      ...createLoginRoutes({
        flow: {
          issuer,
          stores: authStores,
          idp: idpClient,
          clients,
          resources: resources.map((r) => r.resource),
          scopesSupported: [...new Set(resources.flatMap((r) => r.scopes))],
          defaultScopes: RESOURCE_SCOPES,
          cookies,
          logger,
          sessionTtlMs: Math.min(config.authServer.refreshTokenTtl, config.authServer.sessionMaxLifetime),
          codeTtlMs: 120_000,
          pendingTtlMs: 600_000,
          consentTtlMs: 90 * 86_400_000,
          clientIdleTtlMs: CLIENT_IDLE_TTL_MS,
          maxSessionsPerUser: config.authServer.maxSessionsPerUser,
          endSession,
          now,
          // The re-challenge chain (DESIGN §6.4): `mcpgate:connect:<name>` connects that upstream before our code is issued.
          connect:
            oauthUpstreams.length > 0
              ? createConnectChain({ upstreams: oauthUpstreams, flows: upstreamFlows, stores: authStores, basePath, pendingTtlMs: 600_000, logger })
              : undefined,
          redirectSchemes: config.authServer.registration.redirectSchemes,
        },
        registration: config.authServer.registration,
      }),
    );
    const loginCookies = loginCookie(cookies);
    const forms = formTokens(cookies);
    const browser: BrowserSession = {
      current(req) {
        const login = loginCookies.read(req);
        return login && { subject: login.sub, sessionId: login.sid };
      },
      // A browser without our login cookie signs in through the IdP (/oauth/login) and comes back.
      loginUrl: (returnTo) => signInUrl(issuer, returnTo),
      formToken: (req, ...bind) => forms.issue(req, 600, ...bind),
      checkFormToken: (req, token, ...bind) => forms.verify(req, token, ...bind),
    };
    return { routes, authenticator, idpSession, cookies, browser };
  }

}

/** The message bus that goes with `storage.kind`: in process for memory, Valkey pub/sub (connections of its own) for valkey. */
function busFor(config: Config, logger: Logger): MessageBus {
  const valkey = config.storage.valkey;
  const onHandlerError = (error: unknown) => logger.error({ msg: 'event handler failed', err: (error as Error).message });
  if (config.storage.kind === 'memory' || !valkey) return createMemoryBus({ onHandlerError });
  return createValkeyBus({
    // The same servers, credentials and TLS as the store (standalone, Sentinel or Cluster).
    ...valkeyStoreOptions(valkey),
    onError: (error) => logger.warn({ msg: 'valkey event bus connection error', err: error.message }),
    onHandlerError,
  });
}

/** The storage backend `storage.kind` names. */
function storeFor(config: Config, now: () => number, logger: Logger): Store {
  const valkey = config.storage.valkey;
  if (config.storage.kind === 'memory' || !valkey) return createMemoryStore({ now, maxBytes: config.storage.memory.maxBytes });
  return createValkeyStore({
    ...valkeyStoreOptions(valkey),
    // Recurs on every reconnect attempt while Valkey is down; /readyz reports the outage.
    onError: (error) => logger.warn({ msg: 'valkey connection error', err: error.message }),
  });
}
