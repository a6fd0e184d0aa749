/**
 * What a client redeems at the token endpoint: authorization codes (`code:<sha256(code)>`) and
 * refresh tokens (`rt:<sha256(token)>`). Both are kept after use, marked used, so presenting one
 * a second time is recognised as a reuse and the session it belongs to can be revoked.
 */
import type { AuthStores, AuthorizationCodeRecord, RefreshTokenRecord } from './records.ts';
import { CAS_ATTEMPTS, storeKeys, tokenHash, type SealedRecords } from './sealed-records.ts';

/** A stored code: live, or consumed (then only the session it was issued to is kept). */
type StoredCode = { live: AuthorizationCodeRecord } | { usedBy: string };

/** A stored refresh token with its own deadline, so rotation can keep the TTL it had. */
interface StoredRefreshToken {
  record: RefreshTokenRecord;
  expiresAt: number;
}

/**
 * Builds the code store. `reuseWindowMs`: how long a consumed code is remembered (RFC 6749
 * §4.1.2, OAuth 2.1 §4.1.3).
 */
export function createCodeStore(records: SealedRecords, options: { reuseWindowMs: number }): AuthStores['codes'] {
  const { store, seal } = records;
  return {
    async put(code, record, ttlMs) {
      const key = storeKeys.code(code);
      await store.set(key, seal(key, { live: record } satisfies StoredCode), ttlMs);
    },
    async consume(code) {
      const key = storeKeys.code(code);
      // One key, swapped from "live" to "used" by compare-and-set: of two concurrent
      // redemptions exactly one wins and the other sees the marker (and revokes the session).
      for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        const text = await store.get(key);
        const stored = records.open<StoredCode>(key, text);
        if (text === undefined || stored === undefined) return undefined;
        if ('usedBy' in stored) return { sessionId: stored.usedBy, reused: true };
        const used: StoredCode = { usedBy: stored.live.sessionId };
        if (await store.compareAndSet(key, text, seal(key, used), options.reuseWindowMs)) {
          return { record: stored.live, reused: false };
        }
      }
      throw new Error('authorization code: compare-and-set did not settle');
    },
  };
}

/** Builds the refresh-token store; `sessions` tells a live family from a revoked one. */
export function createRefreshTokenStore(records: SealedRecords, sessions: Pick<AuthStores['sessions'], 'get'>): AuthStores['refreshTokens'] {
  const { store, now, seal, read } = records;
  return {
    async put(token, record, ttlMs) {
      const key = storeKeys.refreshToken(token);
      await store.set(key, seal(key, { record, expiresAt: now() + ttlMs } satisfies StoredRefreshToken), ttlMs);
    },
    rotate: (token, successor) => rotateRefreshToken(records, sessions, token, successor),
    async delete(token) {
      await store.delete(storeKeys.refreshToken(token));
    },
    async peek(token) {
      return (await read<StoredRefreshToken>(storeKeys.refreshToken(token)))?.record;
    },
  };
}

/** `refreshTokens.rotate`: marks the token used by compare-and-set, or reports that it was. */
async function rotateRefreshToken(
  records: SealedRecords,
  sessions: Pick<AuthStores['sessions'], 'get'>,
  token: string,
  successor: string | undefined,
): ReturnType<AuthStores['refreshTokens']['rotate']> {
  const { store, now, seal, read, ttlUntil } = records;
  const key = storeKeys.refreshToken(token);
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const text = await store.get(key);
    const stored = records.open<StoredRefreshToken>(key, text);
    if (text === undefined || stored === undefined) return undefined;
    if (stored.record.rotatedAt !== undefined) {
      const { successorHash } = stored.record;
      // The successor may not be stored yet: the concurrent rotation that issued it is still answering.
      const next = successorHash === undefined ? undefined : await read<StoredRefreshToken>(`rt:${successorHash}`);
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
    if (await store.compareAndSet(key, text, seal(key, rotated), ttl)) return { record: stored.record, reused: false };
  }
  throw new Error('refresh token: compare-and-set did not settle');
}
