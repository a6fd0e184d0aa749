/**
 * Login, when `idp:` is configured: the authorization server's endpoints, the check of our access
 * tokens, the browser session on our login cookie, and the gateway's routes that need a signed-in
 * user (the upstream connect pages, the MCP session owners). Loaded only then (lazy.ts).
 */
import { createCimdResolver } from '../authserver/clients/cimd.ts';
import { createClientLookup, createKnownClientLookup, type ClientLookup } from '../authserver/clients/lookup.ts';
import { CLIENT_IDLE_TTL_MS } from '../authserver/clients/register.ts';
import { createConnectChain } from '../authserver/login/connect-chain.ts';
import { createCookieCodec, deriveCookieKey, formTokens, loginCookie, type CookieCodec } from '../authserver/login/cookies.ts';
import { createLoginRoutes } from '../authserver/login/login-flow.ts';
import { signInUrl } from '../authserver/login/sign-in.ts';
import { createMetadataRoutes } from '../authserver/metadata.ts';
import { loadSigningKeys } from '../authserver/tokens/keys.ts';
import { createTokenIssuer } from '../authserver/tokens/mint.ts';
import { createRevocationRoutes } from '../authserver/tokens/revoke.ts';
import { RESOURCE_SCOPES } from '../authserver/tokens/scopes.ts';
import { createTokenRoutes } from '../authserver/tokens/token.ts';
import { createIdpSessionTokens, type IdpSessionTokens } from '../credentials/idp-session.ts';
import type { Authenticator } from '../gateway/authenticate.ts';
import { createJwtAuthenticator } from '../gateway/verify-token.ts';
import type { Route } from '../http/router.ts';
import type { IdpClient } from '../idp/types.ts';
import type { GuardedFetch } from '../net/guarded-fetch.ts';
import type { BrowserSession } from '../upstream-oauth/routes.ts';
import type { Sessions } from './authserver.ts';
import type { AppBasics } from './basics.ts';
import type { Storage } from './storage.ts';
import type { UpstreamOAuth } from './upstream-oauth.ts';

/** The running login: its routes and what the gateway and upstream OAuth take from it. */
export interface Login {
  routes: Route[];
  authenticator: Authenticator;
  idpSession: IdpSessionTokens;
  cookies: CookieCodec;
  browser: BrowserSession;
}

/** Options of {@link assembleLogin}. */
export interface LoginOptions {
  basics: AppBasics;
  storage: Storage;
  sessions: Sessions;
  idpClient: IdpClient;
  upstreamOAuth: UpstreamOAuth;
  serverFetch: GuardedFetch;
}

/** The authorization server's endpoints, the check of our access tokens, and the browser session built on our login cookie. */
export function assembleLogin(options: LoginOptions): Login {
  const { config, logger, now, issuer, basePath, publicUrl, resourceOf, scopesFor } = options.basics;
  const { store, sealer, singleFlight } = options.storage;
  const { authStores, stepUp, endSession } = options.sessions;
  const { idpClient, serverFetch } = options;
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
  const idpSession = createIdpSessionTokens({ stores: authStores, idp: idpClient, logger, now, endSession, refreshes: options.basics.metrics.refreshes, singleFlight, tracer: options.basics.tracer });
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
  // Our login cookie: set by the IdP callback, read wherever a browser must be the user a flow
  // belongs to (the upstream connect links).
  const cookies = createCookieCodec({
    key: deriveCookieKey({ encryptionKey: config.storage.encryptionKeys[0]?.key, signingKeyPem: config.authServer.signingKeys[0] }).key,
    secure: publicUrl.protocol === 'https:',
    now,
  });
  routes.push(...browserLoginRoutes(options, { resources, clients, cookies }));
  return { routes, authenticator, idpSession, cookies, browser: browserSession(cookies, issuer) };
}

/** The browser leg of login: registration, authorize, the IdP callback and the consent page. */
function browserLoginRoutes(
  options: LoginOptions,
  parts: { resources: { resource: string; scopes: readonly string[] }[]; clients: ClientLookup; cookies: CookieCodec },
): Route[] {
  const { config, logger, now, issuer, basePath } = options.basics;
  const { authStores, endSession } = options.sessions;
  const { resources, clients, cookies } = parts;
  const { upstreams: oauthUpstreams, flows: upstreamFlows } = options.upstreamOAuth;
  return createLoginRoutes({
    flow: {
      issuer,
      stores: authStores,
      idp: options.idpClient,
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
      // The re-challenge chain: `mcpgate:connect:<name>` connects that upstream before our code is issued.
      connect:
        oauthUpstreams.length > 0
          ? createConnectChain({ upstreams: oauthUpstreams, flows: upstreamFlows, stores: authStores, basePath, pendingTtlMs: 600_000, logger })
          : undefined,
      redirectSchemes: config.authServer.registration.redirectSchemes,
    },
    registration: config.authServer.registration,
  });
}

/** Who the browser is, by our login cookie, and the form tokens of the upstream connect pages. */
function browserSession(cookies: CookieCodec, issuer: string): BrowserSession {
  const loginCookies = loginCookie(cookies);
  const forms = formTokens(cookies);
  return {
    current(req) {
      const login = loginCookies.read(req);
      return login && { subject: login.sub, sessionId: login.sid };
    },
    // A browser without our login cookie signs in through the IdP (/oauth/login) and comes back.
    loginUrl: (returnTo) => signInUrl(issuer, returnTo),
    formToken: (req, ...bind) => forms.issue(req, 600, ...bind),
    checkFormToken: (req, token, ...bind) => forms.verify(req, token, ...bind),
  };
}
