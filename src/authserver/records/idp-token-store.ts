/**
 * The company IdP's tokens for each session (`idp:{<sid>}`), with the opened values kept in
 * process so the gateway path does not decrypt the same sealed bytes on every request.
 */
import type { AuthStores, IdpTokens } from './records.ts';
import { storeKeys, type SealedRecords } from './sealed-records.ts';

/** The IdP-token store, and the way to drop a session's opened value when the session ends. */
export interface IdpTokenStore extends Readonly<AuthStores['idpTokens']> {
  /** Forgets the opened value of `sessionId` (the session was revoked and its key deleted). */
  forget(sessionId: string): void;
}

/**
 * Builds the IdP-token store. `cacheSize`: most opened values kept in process (an entry is used
 * only while the stored bytes are unchanged).
 */
export function createIdpTokenStore(records: SealedRecords, options: { cacheSize: number }): IdpTokenStore {
  const { store } = records;
  // Opening costs an AES-GCM decryption and a JSON parse (~10 µs) on every gateway request in
  // modes idp/id_token. Keyed by store key and checked against the exact sealed bytes, so a
  // refresh, a revoke or another replica's write is seen at once.
  const opened = new Map<string, { sealed: string; value: IdpTokens }>();
  function openIdpTokens(key: string, sealed: string | undefined): IdpTokens | undefined {
    if (sealed === undefined) {
      opened.delete(key);
      return undefined;
    }
    const hit = opened.get(key);
    if (hit?.sealed === sealed) return hit.value;
    const value = records.open<IdpTokens>(key, sealed);
    opened.delete(key);
    if (value === undefined) return undefined;
    if (opened.size >= options.cacheSize) opened.delete(opened.keys().next().value!);
    opened.set(key, { sealed, value });
    return value;
  }
  return {
    async get(sessionId) {
      const key = storeKeys.idp(sessionId);
      const value = openIdpTokens(key, await store.get(key));
      // A copy: callers may build on it without touching the cached value.
      return value && { ...value };
    },
    async put(sessionId, tokens, ttlMs) {
      const key = storeKeys.idp(sessionId);
      await store.set(key, records.seal(key, tokens), ttlMs);
    },
    forget(sessionId) {
      opened.delete(storeKeys.idp(sessionId));
    },
  };
}
