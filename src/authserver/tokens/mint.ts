/**
 * Our tokens: JWT access tokens per RFC 9068 (typ `at+jwt`), signed with jose, and
 * opaque refresh tokens (stored only as hashes, see `stores.ts`). Plus the small primitives the
 * endpoints share: random tokens, PKCE S256, constant-time comparison.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { JWTHeaderParameters } from 'jose';
import type { SigningKeys } from './keys.ts';

/**
 * jose, loaded when a token is first signed or verified: a gateway without login (no `idp:`)
 * never does either, and jose is about 3 MB of idle RSS (bench/README.md). Only a cache miss of
 * the gateway path's token cache verifies, so the extra await is off the hot path.
 */
let jose: Promise<typeof import('jose')> | undefined;
function loadJose(): Promise<typeof import('jose')> {
  return (jose ??= import('jose'));
}

/** The claims of our access tokens (RFC 9068 §2.2, plus `sid`, the token family). Times in epoch seconds. */
export interface AccessTokenClaims {
  iss: string;
  sub: string;
  /** The upstream resource URL the token is for (RFC 8707), e.g. `https://gw.example.com/kube/mcp`. */
  aud: string;
  exp: number;
  iat: number;
  jti: string;
  client_id: string;
  /** Space-separated scopes (RFC 9068 §2.2.3); empty when none were granted. */
  scope: string;
  /** The session (token family) the token belongs to. */
  sid: string;
}

/** What an access token is issued for. */
export interface AccessTokenGrant {
  subject: string;
  resource: string;
  clientId: string;
  scopes: readonly string[];
  sessionId: string;
}

/** Signs access tokens; see {@link createTokenIssuer}. */
export interface TokenIssuer {
  /** A signed access token and its lifetime in seconds (`expires_in`). */
  issueAccessToken(grant: AccessTokenGrant): Promise<{ token: string; expiresIn: number }>;
}

/** RFC 9068 §2.1: the `typ` header of a JWT access token. */
export const ACCESS_TOKEN_TYPE = 'at+jwt';

/**
 * Creates the access-token issuer.
 * @param options.issuer our issuer identifier (the public URL without a trailing slash).
 * @param options.accessTokenTtlMs lifetime in milliseconds (`authServer.accessTokenTtl`, default 10 min), whole seconds at least 1.
 * @param options.now clock in epoch milliseconds, default `Date.now`.
 */
export function createTokenIssuer(options: { issuer: string; keys: SigningKeys; accessTokenTtlMs: number; now?: () => number }): TokenIssuer {
  const { issuer, keys } = options;
  const now = options.now ?? Date.now;
  const ttlSeconds = Math.floor(options.accessTokenTtlMs / 1000);
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) throw new TypeError('accessTokenTtlMs must be at least 1000');
  const header: JWTHeaderParameters = { alg: keys.signing.alg, kid: keys.signing.kid, typ: ACCESS_TOKEN_TYPE };

  return {
    async issueAccessToken(grant) {
      const iat = Math.floor(now() / 1000);
      const claims: AccessTokenClaims = {
        iss: issuer,
        sub: grant.subject,
        aud: grant.resource,
        exp: iat + ttlSeconds,
        iat,
        jti: randomToken(16),
        client_id: grant.clientId,
        scope: grant.scopes.join(' '),
        sid: grant.sessionId,
      };
      const { SignJWT } = await loadJose();
      const token = await new SignJWT({ ...claims }).setProtectedHeader(header).sign(keys.signing.privateKey);
      return { token, expiresIn: ttlSeconds };
    },
  };
}

/** Options of {@link verifyAccessToken}. */
export interface VerifyAccessTokenOptions {
  issuer: string;
  keys: SigningKeys;
  /** The accepted audience(s): the upstream's resource URL on the gateway path (RFC 8707). */
  audience: string | readonly string[];
  now?: () => number;
}

/**
 * Verifies one of our access tokens: signature by a published key (by `kid`, alg pinned to that
 * key), `typ` `at+jwt`, `iss`, `aud`, `exp`, and the presence and types of our claims.
 * Throws (a jose error or a `TypeError`) when anything is wrong; the caller maps that to 401.
 */
export async function verifyAccessToken(token: string, options: VerifyAccessTokenOptions): Promise<AccessTokenClaims> {
  const { keys } = options;
  const { jwtVerify } = await loadJose();
  const { payload } = await jwtVerify(
    token,
    (header) => {
      const key = header.kid === undefined ? undefined : keys.byKid.get(header.kid);
      // The algorithm is the key's, never the header's choice (RFC 8725 §3.1).
      if (!key || key.alg !== header.alg) throw new TypeError('no published key matches the token header');
      return key.key;
    },
    {
      issuer: options.issuer,
      audience: typeof options.audience === 'string' ? options.audience : [...options.audience],
      typ: ACCESS_TOKEN_TYPE,
      algorithms: keys.algorithms,
      requiredClaims: ['sub', 'exp', 'iat', 'jti', 'client_id', 'sid'],
      currentDate: new Date((options.now ?? Date.now)()),
    },
  );
  const { sub, aud, client_id, sid, scope } = payload as Record<string, unknown>;
  if (typeof sub !== 'string' || typeof client_id !== 'string' || typeof sid !== 'string' || typeof aud !== 'string') {
    throw new TypeError('access token claims have the wrong types');
  }
  if (scope !== undefined && typeof scope !== 'string') throw new TypeError('access token scope is not a string');
  return { ...(payload as unknown as AccessTokenClaims), scope: scope ?? '' };
}

/** `bytes` random bytes as base64url: refresh tokens (32), codes, `jti`s, session ids. */
export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

/** An opaque refresh token: 32 random bytes, base64url (43 characters). */
export function newRefreshToken(): string {
  return randomToken(32);
}

/** RFC 7636 §4.2 S256: BASE64URL(SHA256(ASCII(code_verifier))). */
export function pkceChallenge(verifier: string): string {
  return createHash('sha256').update(verifier, 'ascii').digest('base64url');
}

/** RFC 7636 §4.1: 43–128 characters of `[A-Za-z0-9-._~]`. */
export function isPkceVerifier(value: string): boolean {
  return /^[A-Za-z0-9\-._~]{43,128}$/.test(value);
}

/**
 * Constant-time string equality. Both sides are hashed first, so neither the
 * content nor the length of the secret leaks through timing.
 */
export function safeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
