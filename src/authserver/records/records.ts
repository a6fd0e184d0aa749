/**
 * The records of our authorization server and the domain-store interface the
 * endpoints share. Implemented once above the storage port (`stores.ts`), for every backend.
 * Codes and refresh tokens are keyed by their SHA-256 hash, so a dump of the store cannot be
 * replayed; every record is sealed (AES-256-GCM) for its key name, so one written or changed in
 * the store without the store key grants nothing.
 * All times are epoch milliseconds.
 */

/** A client that registered by DCR (RFC 7591) or is known by its metadata document URL (CIMD). */
export interface ClientRecord {
  clientId: string;
  kind: 'dcr' | 'cimd';
  /** SHA-256 (base64url) of the secret of a confidential client; absent for public clients. */
  secretHash?: string;
  tokenEndpointAuthMethod: 'none' | 'client_secret_basic' | 'client_secret_post';
  redirectUris: string[];
  grantTypes: string[];
  clientName?: string;
  clientUri?: string;
  logoUri?: string;
  scope?: string;
  createdAt: number;
  /**
   * Set at the registration's first use (the first sign-in at the IdP for it); the idle expiry of
   * a DCR registration slides from it. Absent: never used, the registration lives minutes.
   */
  lastUsedAt?: number;
}

/** Our authorization request, parked while the browser logs in at the IdP. Single use, 10 min. */
export interface PendingAuthorization {
  clientId: string;
  redirectUri: string;
  /** PKCE S256 challenge from the agent. */
  codeChallenge: string;
  /** The upstream resource URL the token is for (RFC 8707). */
  resource: string;
  scopes: string[];
  /** The agent's `state`, returned unchanged. */
  clientState?: string;
  /** Our PKCE verifier and nonce towards the IdP (sealed). */
  idpCodeVerifier: string;
  idpNonce: string;
  createdAt: number;
  /**
   * Set once the IdP login is done and the user must still approve the client (the consent
   * page): the record is then parked again under the consent form's id.
   */
  subject?: string;
  sessionId?: string;
}

/**
 * A browser sign-in without an authorization request (`GET /oauth/login?return_to=…`), parked
 * while the browser logs in at the IdP. Single use, 10 min. It ends in our login cookie and a
 * redirect to `returnTo`: no session and no code.
 */
export interface PendingSignIn {
  /** A path of ours (checked at `/oauth/login`): where the browser goes once signed in. */
  returnTo: string;
  /** Our PKCE verifier and nonce towards the IdP (sealed). */
  idpCodeVerifier: string;
  idpNonce: string;
  createdAt: number;
}

/** Our authorization code, stored under its hash. Single use, bound to everything below. */
export interface AuthorizationCodeRecord {
  clientId: string;
  redirectUri: string;
  codeChallenge: string;
  resource: string;
  scopes: string[];
  subject: string;
  sessionId: string;
  createdAt: number;
}

/** A login session: one token family (`sid`). Slides forward on every refresh. */
export interface SessionRecord {
  sessionId: string;
  subject: string;
  /** The IdP's own `sub` for the user, when it differs from `subject` (`idp.userClaim` is another claim); for the access log. */
  idpSubject?: string;
  clientId: string;
  createdAt: number;
  /** When the family ends unless refreshed again (now + refreshTokenTtl at each refresh). */
  expiresAt: number;
}

/** A refresh token, stored under its hash. `rotatedAt` marks a used one: presenting it again revokes the family. */
export interface RefreshTokenRecord {
  sessionId: string;
  clientId: string;
  resource: string;
  scopes: string[];
  subject: string;
  createdAt: number;
  rotatedAt?: number;
  /** Once rotated: the hash of the refresh token issued in its place (tells the previous token from older ones). */
  successorHash?: string;
}

/** The company IdP's tokens for one session, kept server-side (sealed). */
export interface IdpTokens {
  accessToken: string;
  refreshToken?: string;
  idToken?: string;
  /** Access-token expiry; undefined when the IdP did not say. */
  expiresAt?: number;
  scope?: string;
  tokenType?: string;
}

/** A user's approval of a client (the consent page), per user and client. */
export interface ConsentRecord {
  scopes: string[];
  grantedAt: number;
}

/**
 * The domain stores. Every method throws `StoreUnavailableError` on I/O failure; `undefined`
 * means "not there", never "could not ask".
 */
export interface AuthStores {
  clients: {
    get(clientId: string): Promise<ClientRecord | undefined>;
    put(client: ClientRecord, ttlMs: number): Promise<void>;
    /**
     * Counts one new registration against the fleet-wide budget of registrations not used yet:
     * admitted while fewer than `max` were admitted in the current and the previous `windowMs`
     * window (an unused registration lives `windowMs`, so every one still alive is among them).
     * `retryAfterMs`: when a refused caller may try again.
     */
    admitUnused(options: { max: number; windowMs: number }): Promise<{ admitted: boolean; retryAfterMs: number }>;
  };
  consents: {
    get(subject: string, clientId: string): Promise<ConsentRecord | undefined>;
    put(subject: string, clientId: string, consent: ConsentRecord, ttlMs: number): Promise<void>;
  };
  pending: {
    /** Stores under `state` (the value we send to the IdP). */
    put(state: string, pending: PendingAuthorization, ttlMs: number): Promise<void>;
    /** Atomic take: a second call with the same state gets undefined. */
    take(state: string): Promise<PendingAuthorization | undefined>;
  };
  signIns: {
    /** Stores under `state` (the value we send to the IdP). */
    put(state: string, signIn: PendingSignIn, ttlMs: number): Promise<void>;
    /** Atomic take: a second call with the same state gets undefined. */
    take(state: string): Promise<PendingSignIn | undefined>;
  };
  codes: {
    /** Stores under the code's hash. */
    put(code: string, record: AuthorizationCodeRecord, ttlMs: number): Promise<void>;
    /**
     * Consumes the code. `reused` is true when this code was already consumed (within its
     * lifetime plus a margin): the caller revokes the session it was issued to.
     */
    consume(code: string): Promise<{ record: AuthorizationCodeRecord; reused: false } | { sessionId: string; reused: true } | undefined>;
  };
  sessions: {
    get(sessionId: string): Promise<SessionRecord | undefined>;
    /** Creates or extends; also adds the session to its user's index. */
    put(session: SessionRecord): Promise<void>;
    /**
     * Slides a live session to `expiresAt` (a refresh), its IdP tokens with it.
     * Atomic against `revoke`: a session revoked meanwhile is not brought back; undefined then.
     */
    extend(sessionId: string, expiresAt: number): Promise<SessionRecord | undefined>;
    /** The sessions of a user (for "sign out everywhere"). */
    listForUser(subject: string): Promise<string[]>;
    /**
     * Every live session (operators: `mcpgate sessions list`). Sessions created before this index
     * existed appear once they are refreshed.
     */
    listAll(): Promise<string[]>;
    /** Ends a session: its record, its IdP tokens, its refresh tokens and upstream tokens stop working. */
    revoke(sessionId: string): Promise<void>;
  };
  refreshTokens: {
    put(token: string, record: RefreshTokenRecord, ttlMs: number): Promise<void>;
    /**
     * Rotates atomically: marks the token used (recording `successor`, the token issued in its
     * place) and returns its record; `reused` when it had been used already, with
     * `successorUnused` true when the token issued in its place has not been used yet, or is not
     * stored yet (this was the immediately previous token of the family); undefined when unknown or expired.
     */
    rotate(token: string, successor?: string): Promise<{ record: RefreshTokenRecord; reused: boolean; successorUnused?: boolean } | undefined>;
    /** Revokes one token (RFC 7009). */
    delete(token: string): Promise<void>;
    /** The record without consuming it (revocation looks up the family). */
    peek(token: string): Promise<RefreshTokenRecord | undefined>;
  };
  idpTokens: {
    get(sessionId: string): Promise<IdpTokens | undefined>;
    put(sessionId: string, tokens: IdpTokens, ttlMs: number): Promise<void>;
  };
}
