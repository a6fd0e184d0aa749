/**
 * The browser leg of our authorization server (DESIGN §4), wired into routes:
 *
 *   GET  /oauth/authorize  validate the client's request, park it, send the browser to the IdP
 *   GET  /oauth/callback   the IdP's answer: finish the login, create the session; then either
 *                          issue our code, or show the consent page when this user has not
 *                          approved this client yet
 *   POST /oauth/consent    the consent form: approve (remember it, issue the code) or deny
 *   POST /oauth/register   dynamic client registration (only when enabled)
 *   GET  /oauth/login      a browser-only sign-in that returns to one of our paths (sign-in.ts)
 *
 * Consent comes after the IdP login, not before: the approval is per user and client, and only
 * the IdP tells us reliably who the user is. (Our login cookie could say so earlier, but a
 * cookie from an earlier login must not decide for a login that has not happened yet.)
 */
import type { Logger } from '../../observability/logger.ts';
import type { Route } from '../../http/router.ts';
import { InvalidClient } from '../../http/errors.ts';
import type { IdpClient } from '../../idp/types.ts';
import { createAuthorizeEndpoint } from './authorize.ts';
import { createCallbackEndpoint } from './callback.ts';
import type { CimdResolver } from '../clients/cimd.ts';
import { createResumeEndpoint, type ConnectChain } from './connect-chain.ts';
import { createConsentEndpoint } from './consent.ts';
import type { CookieCodec } from './cookies.ts';
import type { AuthStores, ClientRecord } from '../records/records.ts';
import type { RedirectSchemePolicy } from '../clients/redirect-uri.ts';
import { createRegistrationEndpoint } from '../clients/register.ts';
import type { EndSession } from '../records/session-end.ts';
import { createSignInEndpoint } from './sign-in.ts';

/** Everything the login endpoints share. Durations in milliseconds. */
export interface LoginFlow {
  /** Our issuer identifier (the public URL without a trailing slash): RFC 9207 `iss`. */
  issuer: string;
  stores: AuthStores;
  idp: IdpClient;
  /** Finds a client: registered (DCR) or by its metadata document (CIMD). */
  clients: ClientLookup;
  /** The resource URLs of our upstreams (`{publicUrl}/{name}/mcp`). */
  resources: readonly string[];
  /** Scopes a client may ask for; unknown ones are dropped (RFC 6749 §3.3). */
  scopesSupported: readonly string[];
  /** Granted when the client asks for none. */
  defaultScopes: readonly string[];
  cookies: CookieCodec;
  logger: Logger;
  /** Lifetime of a session without refresh (`authServer.refreshTokenTtl`). */
  sessionTtlMs: number;
  /** Lifetime of our authorization codes (60 s to 10 min). */
  codeTtlMs: number;
  /** Lifetime of a parked authorization request and of the consent page (10 min). */
  pendingTtlMs: number;
  /** How long an approval is remembered, per user and client. */
  consentTtlMs: number;
  /** Idle lifetime of a used DCR registration; its first sign-in starts it, later authorization requests slide it. */
  clientIdleTtlMs: number;
  /**
   * Most live sessions per user (`authServer.maxSessionsPerUser`): a login past it ends the
   * user's oldest sessions. Default 20.
   */
  maxSessionsPerUser?: number;
  /** The one session-ending path (session-end.ts), so a session ended by the cap loses its upstream grants too. Default `stores.sessions.revoke`. */
  endSession?: EndSession;
  now: () => number;
  /** Connects the upstreams a request's `mcpgate:connect:<name>` scopes name before the code is issued (the re-challenge chain). */
  connect?: ConnectChain;
  /**
   * `authServer.registration.redirectSchemes`, checked at registration and again at each
   * authorization request (a scheme denied after a client registered stops working at once).
   * Default: any scheme but the never-accepted ones.
   */
  redirectSchemes?: RedirectSchemePolicy;
}

/** Finds a client by id. @throws InvalidClient when a metadata document cannot be used (the reason is safe to show). */
export type ClientLookup = (clientId: string, signal?: AbortSignal) => Promise<ClientRecord | undefined>;

/**
 * The client lookup of the authorize and token endpoints: an http(s) URL is a metadata document
 * (when CIMD is on; otherwise such a client is unknown), anything else a registration.
 */
export function createClientLookup(options: { stores: Pick<AuthStores, 'clients'>; cimd: CimdResolver | undefined }): ClientLookup {
  return async (clientId, signal) => {
    if (/^https?:\/\//i.test(clientId)) {
      if (!options.cimd) throw new InvalidClient('client metadata documents are not accepted here; register the client first');
      return options.cimd.resolve(clientId, signal);
    }
    return registeredClient(options.stores, clientId);
  };
}

/**
 * The client lookup of the token and revocation endpoints: like {@link createClientLookup}, but a
 * metadata document is only read from what an authorization request stored, never fetched, so
 * these endpoints cannot make the gateway fetch a URL (an unknown one is an unknown client).
 */
export function createKnownClientLookup(options: { stores: Pick<AuthStores, 'clients'>; cimd: CimdResolver | undefined }): ClientLookup {
  return async (clientId, signal) => {
    if (/^https?:\/\//i.test(clientId)) return options.cimd?.known(clientId, signal);
    return registeredClient(options.stores, clientId);
  };
}

async function registeredClient(stores: Pick<AuthStores, 'clients'>, clientId: string): Promise<ClientRecord | undefined> {
  const client = await stores.clients.get(clientId);
  // A record that claims to be a document but is stored under a plain id is not one of ours.
  return client?.kind === 'dcr' ? client : undefined;
}

/** Options of {@link createLoginRoutes}. */
export interface LoginRoutesOptions {
  flow: LoginFlow;
  /** `authServer.registration`: when `dynamic` is false there is no registration endpoint (404). */
  registration: { dynamic: boolean; initialAccessToken: string | null; unusedTtl?: number; maxUnused?: number };
}

/** The routes of the browser leg and of registration. */
export function createLoginRoutes(options: LoginRoutesOptions): Route[] {
  const { flow } = options;
  // Under the issuer's path when the public URL has one (https://host/gw/oauth/authorize).
  const base = new URL(flow.issuer).pathname.replace(/\/+$/, '');
  const routes: Route[] = [
    { method: 'GET', path: `${base}/oauth/authorize`, name: 'authorize', handler: createAuthorizeEndpoint(flow) },
    { method: 'GET', path: `${base}/oauth/callback`, name: 'callback', handler: createCallbackEndpoint(flow) },
    { method: 'POST', path: `${base}/oauth/consent`, name: 'consent', handler: createConsentEndpoint(flow) },
    { method: 'GET', path: `${base}/oauth/login`, name: 'sign-in', handler: createSignInEndpoint(flow) },
  ];
  if (flow.connect) routes.push({ method: 'GET', path: flow.connect.resumePath, name: 'authorize-resume', handler: createResumeEndpoint(flow) });
  if (options.registration.dynamic) {
    routes.push({
      method: 'POST',
      path: `${base}/oauth/register`,
      name: 'register',
      handler: createRegistrationEndpoint({
        stores: flow.stores,
        initialAccessToken: options.registration.initialAccessToken,
        unusedTtlMs: options.registration.unusedTtl,
        maxUnused: options.registration.maxUnused,
        now: flow.now,
        redirectSchemes: flow.redirectSchemes,
      }),
    });
  }
  return routes;
}
