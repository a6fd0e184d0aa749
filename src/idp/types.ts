import type { IdpTokens } from '../authserver/records.ts';

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

/** The start of a login at the IdP: where to send the browser, and what to keep for the callback. */
export interface IdpLoginStart {
  url: string;
  codeVerifier: string;
  nonce: string;
}

/** The result of the IdP callback: who logged in and the tokens to keep server-side. */
export interface IdpLoginResult {
  /** The user, from the configured `userClaim` of the validated ID token. */
  subject: string;
  tokens: IdpTokens;
  /** Claims of the ID token (for display: name, email). */
  claims: Record<string, unknown>;
}

/**
 * The company IdP (OIDC) as our authorization server uses it, implemented with
 * openid-client in `oidc.ts`. Throws `IdpError`.
 */
export interface IdpClient {
  /** Builds the authorization request: our `state`, a fresh PKCE verifier and nonce, `redirect_uri` = our `/oauth/callback`. */
  startLogin(state: string): Promise<IdpLoginStart>;
  /** Exchanges the code from the callback URL and validates the ID token (issuer, audience, nonce). */
  finishLogin(callbackUrl: URL, expected: { state: string; codeVerifier: string; nonce: string }): Promise<IdpLoginResult>;
  /** Refresh-token grant. A refresh token the IdP omits is carried forward from `current`. */
  refresh(current: IdpTokens): Promise<IdpTokens>;
}
