/**
 * What the login endpoints share. Its own module so that `login-flow.ts`, which assembles the
 * endpoints, and the endpoints, which take this, do not import each other.
 */
import type { Logger } from '../../observability/logger.ts';
import type { IdpClient } from '../../idp/types.ts';
import type { ClientLookup } from '../clients/lookup.ts';
import type { RedirectSchemePolicy } from '../clients/redirect-uri.ts';
import type { AuthStores } from '../records/records.ts';
import type { EndSession } from '../records/session-end.ts';
import type { ConnectChain } from './connect-chain.ts';
import type { CookieCodec } from './cookies.ts';

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
