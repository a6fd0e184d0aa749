/**
 * The gateway path's check of OUR access tokens: bearer from the `Authorization`
 * header only (RFC 6750 §2.1; never a query or body parameter), signature by a published key,
 * `typ` `at+jwt`, `iss`, `aud` = this upstream's resource (RFC 8707: a token for A is refused at
 * B), `exp`, and a live session (so logout and family revocation take effect at once).
 *
 * Verified tokens are cached (bounded LRU keyed by the token's SHA-256) until they expire, so the
 * common request costs a hash and a map lookup instead of a signature check. The session is
 * checked on every request, cached or not.
 */
import { hash } from 'node:crypto';
import { insufficientScope, unauthorized } from '../authserver/tokens/challenge.ts';
import type { SigningKeys } from '../authserver/tokens/keys.ts';
import type { AuthStores } from '../authserver/records/records.ts';
import { verifyAccessToken } from '../authserver/tokens/mint.ts';
import type { Principal } from '../credentials/types.ts';
import type { RequestContext } from '../http/router.ts';
import type { Authenticator } from './authenticate.ts';
import type { Upstream } from './upstream.ts';

/** Options of {@link createJwtAuthenticator}. */
export interface JwtAuthenticatorOptions {
  /** Our issuer identifier (`iss`). */
  issuer: string;
  keys: SigningKeys;
  stores: Pick<AuthStores, 'sessions'>;
  /** Scopes a token needs, by upstream name; an upstream not listed needs none. */
  upstreamScopes?: ReadonlyMap<string, readonly string[]>;
  /** Most verified tokens kept (LRU). E.g. 10 000: about 2 MB. */
  cacheSize: number;
  /** Clock, epoch ms; default `Date.now`. */
  now?: () => number;
}

/** The authenticator plus counters that show the cache at work (tests, metrics). */
export interface JwtAuthenticator extends Authenticator {
  stats(): { verifications: number; cacheHits: number; cached: number };
}

interface CachedToken {
  principal: Principal;
  audience: string;
  /** `exp` in epoch ms. */
  expiresAtMs: number;
}

/** Longer than any token we issue; a bigger header is not one of ours. */
const MAX_TOKEN_LENGTH = 8192;
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

/** Creates the authenticator of a gateway with login (`idp:` configured). */
export function createJwtAuthenticator(options: JwtAuthenticatorOptions): JwtAuthenticator {
  const { issuer, keys, stores } = options;
  const now = options.now ?? Date.now;
  if (!Number.isSafeInteger(options.cacheSize) || options.cacheSize < 1) throw new TypeError('cacheSize must be a positive integer');
  const cache = new Map<string, CachedToken>();
  let verifications = 0;
  let cacheHits = 0;

  function cached(key: string, at: number): CachedToken | undefined {
    const entry = cache.get(key);
    if (!entry) return undefined;
    cache.delete(key);
    if (entry.expiresAtMs <= at) return undefined;
    cache.set(key, entry); // most recently used last
    return entry;
  }

  function remember(key: string, entry: CachedToken): void {
    if (cache.size >= options.cacheSize) cache.delete(cache.keys().next().value!);
    cache.set(key, entry);
  }

  async function verified(token: string, upstream: Upstream, scopes: readonly string[]): Promise<CachedToken> {
    const key = hash('sha256', token, 'base64');
    const hit = cached(key, now());
    if (hit) {
      cacheHits++;
      // The cache is shared by every upstream; the audience is checked on each use.
      if (hit.audience !== upstream.resource) throw unauthorized({ resource: upstream.resource, scopes, tokenSent: true, description: 'the access token is for another resource' });
      return hit;
    }
    verifications++;
    let claims;
    try {
      claims = await verifyAccessToken(token, { issuer, keys, audience: upstream.resource, now });
    } catch {
      // Which check failed stays out of the answer and the log: it only helps someone forging tokens.
      throw unauthorized({ resource: upstream.resource, scopes, tokenSent: true });
    }
    const entry: CachedToken = {
      principal: {
        subject: claims.sub,
        sessionId: claims.sid,
        clientId: claims.client_id,
        scopes: claims.scope.split(' ').filter(Boolean),
        expiresAt: claims.exp,
      },
      audience: claims.aud,
      expiresAtMs: claims.exp * 1000,
    };
    remember(key, entry);
    return entry;
  }

  return {
    async authenticate(ctx: RequestContext, upstream: Upstream, alongside?: (principal: Principal) => void): Promise<Principal> {
      const scopes = options.upstreamScopes?.get(upstream.name) ?? [];
      const header = ctx.req.headers.authorization;
      if (header === undefined || !/^bearer(?: |$)/i.test(header)) {
        // No bearer token at all: the bare challenge that starts discovery (RFC 6750 §3.1, RFC 9728 §5.1).
        throw unauthorized({ resource: upstream.resource, scopes, tokenSent: false });
      }
      const token = header.length <= MAX_TOKEN_LENGTH + 7 ? BEARER.exec(header)?.[1] : undefined;
      if (token === undefined) throw unauthorized({ resource: upstream.resource, scopes, tokenSent: true, description: 'malformed bearer token' });

      const { principal } = await verified(token, upstream, scopes);
      const scoped = scopes.length === 0 || scopes.every((s) => principal.scopes.includes(s));
      const liveness = stores.sessions.get(principal.sessionId);
      // Only for a request that will pass if its session is alive: a refused one starts nothing.
      if (scoped) alongside?.(principal);
      const session = await liveness;
      // An ended session is a 401 even when the scope is short too: signing in again is what helps.
      if (!session || session.subject !== principal.subject) {
        throw unauthorized({ resource: upstream.resource, scopes, tokenSent: true, description: 'the session has ended; sign in again' });
      }
      if (!scoped) throw insufficientScope({ resource: upstream.resource, scopes });
      // The cached principal is shared by every request with this token: never mutated.
      return session.idpSubject === undefined ? principal : { ...principal, idpSubject: session.idpSubject };
    },
    stats: () => ({ verifications, cacheHits, cached: cache.size }),
  };
}
