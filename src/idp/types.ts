import type { IdpTokens } from '../authserver/records/records.ts';

/** Why a call to the IdP failed: `rejected` (4xx, e.g. invalid_grant: the grant is dead) or `unavailable` (5xx, network). */
export class IdpError extends Error {
  override name = 'IdpError';
  readonly kind: 'rejected' | 'unavailable';
  /** The OAuth error code the IdP returned, when it returned one (safe to log). */
  readonly oauthError?: string;
  constructor(kind: IdpError['kind'], message: string, options: { oauthError?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.kind = kind;
    this.oauthError = options.oauthError;
  }
}

/**
 * The IdP signed the user in, but the account cannot be used here (e.g. an unverified e-mail as
 * the user's identity). The message is written for the user and safe to show.
 */
export class IdpAccountRefused extends IdpError {
  override name = 'IdpAccountRefused';
  constructor(message: string) {
    super('rejected', message);
  }
}

/** The start of a login at the IdP: where to send the browser, and what to keep for the callback. */
export interface IdpLoginStart {
  url: string;
  codeVerifier: string;
  nonce: string;
}

/** The result of the IdP callback: who logged in and the tokens to keep server-side. */
export interface IdpLoginResult {
  /** The user, from the configured `userClaim` of the validated ID token (OIDC) or of the user-info JSON (OAuth 2.0). */
  subject: string;
  tokens: IdpTokens;
  /** Claims of the ID token, or the user-info JSON (for display: name, email). */
  claims: Record<string, unknown>;
}

/**
 * The company IdP as our authorization server uses it: OpenID Connect through openid-client
 * (`oidc.ts`), or plain OAuth 2.0 with a user-info API (`oauth2.ts`). Throws `IdpError`.
 */
export interface IdpClient {
  /** Builds the authorization request: our `state`, a fresh PKCE verifier and nonce, `redirect_uri` = our `/oauth/callback`. */
  startLogin(state: string): Promise<IdpLoginStart>;
  /** Exchanges the code from the callback URL and validates the ID token (issuer, audience, nonce). */
  finishLogin(callbackUrl: URL, expected: { state: string; codeVerifier: string; nonce: string }): Promise<IdpLoginResult>;
  /** Refresh-token grant. A refresh token the IdP omits is carried forward from `current`. */
  refresh(current: IdpTokens): Promise<IdpTokens>;
  /**
   * Asks the IdP whether it still accepts an access token (a plain OAuth 2.0 IdP: its user-info
   * API). For tokens that cannot be refreshed: tells "revoked at the IdP" (`IdpError`
   * `rejected`) from "an upstream refuses a token the IdP still backs" (resolves). Absent when
   * the IdP offers no such check.
   */
  checkAccess?(tokens: IdpTokens): Promise<void>;
  /**
   * Revokes the session's tokens at the IdP (RFC 7009), best effort: resolves whatever the IdP
   * answers. Absent when no revocation endpoint is configured.
   */
  revoke?(tokens: IdpTokens): Promise<void>;
}
