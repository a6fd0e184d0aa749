/**
 * The domain stores of our authorization server, written once above the storage
 * port so every backend (memory, Valkey) gets the same token families, indexes and sealing.
 *
 * Keys (the parts in braces are Valkey hash tags, so one session's keys share a cluster slot):
 * - `client:<client_id>`                 ClientRecord (holds only a secret's hash)
 * - `consent:<sub>:<client_id>`          ConsentRecord (sub and client_id percent-encoded)
 * - `pending:<state>`                    PendingAuthorization, sealed (our IdP PKCE verifier)
 * - `signin:<state>`                     PendingSignIn, sealed (our IdP PKCE verifier)
 * - `code:<sha256(code)>`                AuthorizationCodeRecord; once consumed, a "used" marker
 * - `session:{<sid>}`                    SessionRecord
 * - `idp:{<sid>}`                        IdpTokens, sealed
 * - `user:<sub>:sessions`                set of sids
 * - `rt:<sha256(token)>`                 RefreshTokenRecord (rotated in place, never deleted on use)
 *
 * Sealed values are sealed under their own key name, so a value copied under another key (one
 * user's IdP tokens into another's session) does not open.
 */
import { createHash } from 'node:crypto';
import type { Store } from '../store/port.ts';
import type { Sealer } from '../store/sealed.ts';
import type {
  AuthStores,
  AuthorizationCodeRecord,
  ClientRecord,
  ConsentRecord,
  IdpTokens,
  PendingAuthorization,
  PendingSignIn,
  RefreshTokenRecord,
  SessionRecord,
} from './records.ts';

/** Options of {@link createAuthStores}. */
export interface AuthStoresOptions {
  store: Store;
  /** Seals every value holding a token, verifier or secret. */
  sealer: Sealer;
  /** The clock, epoch milliseconds. Default `Date.now`; tests share the memory store's fake clock. */
  now?: () => number;
  /**
   * Most opened IdP-token values kept in process, so the gateway path does not decrypt the same
   * sealed bytes on every request (an entry is used only while the stored bytes are unchanged).
   * Default 10 000.
   */
  openedCacheSize?: number;
  /**
   * How long a consumed code is remembered so a second redemption can be recognised and the
   * session revoked (RFC 6749 §4.1.2, OAuth 2.1 §4.1.3). Milliseconds, default 15 minutes
   * (longer than any code lifetime, 10 minutes at most).
   */
  codeReuseWindowMs?: number;
}

/** A stored code: live, or consumed (then only the session it was issued to is kept). */
type StoredCode = { live: AuthorizationCodeRecord } | { usedBy: string };

/** A stored refresh token with its own deadline, so rotation can keep the TTL it had. */
interface StoredRefreshToken {
  record: RefreshTokenRecord;
  expiresAt: number;
}

/** Compare-and-set retries before giving up: only reached if a key is rewritten in a tight loop. */
const CAS_ATTEMPTS = 8;

/** SHA-256 of a code or token, base64url: what the store keys them by. */
export function tokenHash(value: string): string {
  return createHash('sha256').update(value).digest('base64url');
}

/** Builds the domain stores over one storage port. Values are JSON; see the module comment for keys. */
export function createAuthStores(options: AuthStoresOptions): AuthStores {
  const { store, sealer } = options;
  const now = options.now ?? Date.now;
  const codeReuseWindowMs = options.codeReuseWindowMs ?? 15 * 60_000;
  if (!Number.isSafeInteger(codeReuseWindowMs) || codeReuseWindowMs <= 0) throw new TypeError('codeReuseWindowMs must be a positive integer');

  const keys = {
    client: (clientId: string) => `client:${clientId}`,
    consent: (subject: string, clientId: string) => `consent:${encodeURIComponent(subject)}:${encodeURIComponent(clientId)}`,
    pending: (state: string) => `pending:${state}`,
    signIn: (state: string) => `signin:${state}`,
    code: (code: string) => `code:${tokenHash(code)}`,
    session: (sid: string) => `session:{${sid}}`,
    idp: (sid: string) => `idp:{${sid}}`,
    userSessions: (subject: string) => `user:${encodeURIComponent(subject)}:sessions`,
    refreshToken: (token: string) => `rt:${tokenHash(token)}`,
  };

  async function readJson<T>(key: string): Promise<T | undefined> {
    const text = await store.get(key);
    return text === undefined ? undefined : (JSON.parse(text) as T);
  }

  function readSealed<T>(key: string, text: string | undefined): T | undefined {
    return text === undefined ? undefined : (JSON.parse(sealer.open(key, text)) as T);
  }

  // Opening costs an AES-GCM decryption and a JSON parse (~10 µs) on every gateway request in
  // modes idp/id_token. Keyed by store key and checked against the exact sealed bytes, so a
  // refresh, a revoke or another replica's write is seen at once.
  const openedCacheSize = options.openedCacheSize ?? 10_000;
  const opened = new Map<string, { sealed: string; value: IdpTokens }>();
  function openIdpTokens(key: string, sealed: string | undefined): IdpTokens | undefined {
    if (sealed === undefined) {
      opened.delete(key);
      return undefined;
    }
    const hit = opened.get(key);
    if (hit?.sealed === sealed) return hit.value;
    const value = readSealed<IdpTokens>(key, sealed)!;
    opened.delete(key);
    if (opened.size >= openedCacheSize) opened.delete(opened.keys().next().value!);
    opened.set(key, { sealed, value });
    return value;
  }

  /** A deadline turned into a TTL; a deadline already passed means "do not store". */
  /** A sealed record parked under a random state and taken at most once (pending logins, sign-ins). */
  function singleUseSealed<T>(keyOf: (state: string) => string) {
    return {
      async put(state: string, record: T, ttlMs: number): Promise<void> {
        const key = keyOf(state);
        await store.set(key, sealer.seal(key, JSON.stringify(record)), ttlMs);
      },
      async take(state: string): Promise<T | undefined> {
        const key = keyOf(state);
        return readSealed<T>(key, await store.take(key));
      },
    };
  }

  function ttlUntil(deadline: number): number {
    return Math.ceil(deadline - now());
  }

  const sessions: AuthStores['sessions'] = {
    async get(sessionId) {
      const session = await readJson<SessionRecord>(keys.session(sessionId));
      return session && session.expiresAt > now() ? session : undefined;
    },
    async put(session) {
      const ttl = ttlUntil(session.expiresAt);
      if (ttl <= 0) throw new RangeError('session.expiresAt is in the past');
      // Index first: a session missing from its user's index would survive "sign out everywhere".
      await store.addMembers(keys.userSessions(session.subject), [session.sessionId], ttl);
      await store.set(keys.session(session.sessionId), JSON.stringify(session), ttl);
    },
    async extend(sessionId, expiresAt) {
      const ttl = ttlUntil(expiresAt);
      if (ttl <= 0) throw new RangeError('expiresAt is in the past');
      const key = keys.session(sessionId);
      for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        const text = await store.get(key);
        if (text === undefined) return undefined;
        const session = JSON.parse(text) as SessionRecord;
        if (session.expiresAt <= now()) return undefined;
        const extended: SessionRecord = { ...session, expiresAt: Math.max(session.expiresAt, expiresAt) };
        // Compare-and-set, not set: a revoke that lands between the read and the write wins.
        if (!(await store.compareAndSet(key, text, JSON.stringify(extended), ttlUntil(extended.expiresAt)))) continue;
        await store.addMembers(keys.userSessions(session.subject), [sessionId], ttlUntil(extended.expiresAt));
        // The IdP tokens must live as long as the session. Rewriting the same sealed bytes by
        // compare-and-set only moves the TTL, so an IdP refresh racing with this is never undone.
        const idpKey = keys.idp(sessionId);
        const sealed = await store.get(idpKey);
        if (sealed !== undefined) await store.compareAndSet(idpKey, sealed, sealed, ttlUntil(extended.expiresAt));
        return extended;
      }
      throw new Error('session: compare-and-set did not settle');
    },
    async listForUser(subject) {
      return store.members(keys.userSessions(subject));
    },
    async revoke(sessionId) {
      const session = await readJson<SessionRecord>(keys.session(sessionId));
      // The session record goes first: every refresh and every gateway request checks it, so the
      // family is dead the moment this resolves even if the clean-up below fails half-way.
      await store.delete([keys.session(sessionId), keys.idp(sessionId)]);
      opened.delete(keys.idp(sessionId));
      if (session) await store.removeMembers(keys.userSessions(session.subject), [sessionId]);
    },
  };

  return {
    clients: {
      async get(clientId) {
        return readJson<ClientRecord>(keys.client(clientId));
      },
      async put(client, ttlMs) {
        await store.set(keys.client(client.clientId), JSON.stringify(client), ttlMs);
      },
    },

    consents: {
      async get(subject, clientId) {
        return readJson<ConsentRecord>(keys.consent(subject, clientId));
      },
      async put(subject, clientId, consent, ttlMs) {
        await store.set(keys.consent(subject, clientId), JSON.stringify(consent), ttlMs);
      },
    },

    pending: singleUseSealed<PendingAuthorization>(keys.pending),
    signIns: singleUseSealed<PendingSignIn>(keys.signIn),

    codes: {
      async put(code, record, ttlMs) {
        const stored: StoredCode = { live: record };
        await store.set(keys.code(code), JSON.stringify(stored), ttlMs);
      },
      async consume(code) {
        const key = keys.code(code);
        // One key, swapped from "live" to "used" by compare-and-set: of two concurrent
        // redemptions exactly one wins and the other sees the marker (and revokes the session).
        for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
          const text = await store.get(key);
          if (text === undefined) return undefined;
          const stored = JSON.parse(text) as StoredCode;
          if ('usedBy' in stored) return { sessionId: stored.usedBy, reused: true };
          const used: StoredCode = { usedBy: stored.live.sessionId };
          if (await store.compareAndSet(key, text, JSON.stringify(used), codeReuseWindowMs)) {
            return { record: stored.live, reused: false };
          }
        }
        throw new Error('authorization code: compare-and-set did not settle');
      },
    },

    sessions,

    refreshTokens: {
      async put(token, record, ttlMs) {
        const stored: StoredRefreshToken = { record, expiresAt: now() + ttlMs };
        await store.set(keys.refreshToken(token), JSON.stringify(stored), ttlMs);
      },
      async rotate(token, successor) {
        const key = keys.refreshToken(token);
        for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
          const text = await store.get(key);
          if (text === undefined) return undefined;
          const stored = JSON.parse(text) as StoredRefreshToken;
          if (stored.record.rotatedAt !== undefined) {
            const { successorHash } = stored.record;
            // The successor may not be stored yet: the concurrent rotation that issued it is still answering.
            const next = successorHash === undefined ? undefined : await readJson<StoredRefreshToken>(`rt:${successorHash}`);
            return { record: stored.record, reused: true, successorUnused: successorHash !== undefined && next?.record.rotatedAt === undefined };
          }
          // A token of a revoked family is dead: its session is gone.
          if (!(await sessions.get(stored.record.sessionId))) return undefined;
          const ttl = ttlUntil(stored.expiresAt);
          if (ttl <= 0) return undefined;
          const rotated: StoredRefreshToken = {
            ...stored,
            record: { ...stored.record, rotatedAt: now(), ...(successor === undefined ? {} : { successorHash: tokenHash(successor) }) },
          };
          // Kept, marked used, until it would have expired: presenting it again is then a reuse.
          if (await store.compareAndSet(key, text, JSON.stringify(rotated), ttl)) return { record: stored.record, reused: false };
        }
        throw new Error('refresh token: compare-and-set did not settle');
      },
      async delete(token) {
        await store.delete(keys.refreshToken(token));
      },
      async peek(token) {
        return (await readJson<StoredRefreshToken>(keys.refreshToken(token)))?.record;
      },
    },

    idpTokens: {
      async get(sessionId) {
        const key = keys.idp(sessionId);
        const value = openIdpTokens(key, await store.get(key));
        // A copy: callers may build on it without touching the cached value.
        return value && { ...value };
      },
      async put(sessionId, tokens, ttlMs) {
        const key = keys.idp(sessionId);
        await store.set(key, sealer.seal(key, JSON.stringify(tokens)), ttlMs);
      },
    },
  };
}
