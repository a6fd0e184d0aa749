/**
 * The domain stores of our authorization server, written once above the storage
 * port so every backend (memory, Valkey) gets the same token families, indexes and sealing.
 * One module per record kind (`client-store.ts`, `session-store.ts`, `grant-stores.ts` for codes
 * and refresh tokens, `idp-token-store.ts`), all over `sealed-records.ts`; this one assembles them.
 *
 * Keys (the parts in braces are Valkey hash tags, so one session's keys share a cluster slot):
 * - `client:<client_id>`                 ClientRecord (holds only a secret's hash)
 * - `consent:<sub>:<client_id>`          ConsentRecord (sub and client_id percent-encoded)
 * - `pending:<state>`                    PendingAuthorization (our IdP PKCE verifier)
 * - `signin:<state>`                     PendingSignIn (our IdP PKCE verifier)
 * - `code:<sha256(code)>`                AuthorizationCodeRecord; once consumed, a "used" marker
 * - `session:{<sid>}`                    SessionRecord, with the session's entries in its user's index and in `sessions`
 * - `idp:{<sid>}`                        IdpTokens
 * - `user:<sub>:sessions`                set of the user's sids, each sealed (see below)
 * - `sessions`                           set of every sid, each sealed (operators' `mcpgate sessions list`); pruned when listed
 * - `rt:<sha256(token)>`                 RefreshTokenRecord (rotated in place, never deleted on use)
 * - `registrations:unused:<window>`      count of registrations admitted in that window (not sealed: a
 *                                        number that grants nothing; forging it can only refuse registrations)
 *
 * Every record is sealed (AES-256-GCM, `sealed.ts`) for the name of the key it is stored under.
 * Not only for secrecy: these records grant access, and anyone who can write to Valkey could
 * otherwise mint a redeemable code for any session, add a redirect URI to an approved client,
 * or stretch a session. A value that does not open (written by someone without the key, or
 * copied from another key: one user's IdP tokens into another's session) is treated as absent
 * and logged; it never grants anything.
 *
 * The user index holds each sid sealed for the index's key name, so reading the index reveals no
 * session id and links no user to one; "sign out everywhere" opens the entries. Sealing is
 * randomised, so each session record keeps the exact entry it added, for `revoke` to remove.
 * Retiring an encryption key swaps each entry for one sealed under the current key, the record's
 * copy with it (`session-index-reseal.ts`, run by `mcpgate keys reseal`).
 */
import type { Logger } from '../../observability/logger.ts';
import type { Store } from '../../store/port.ts';
import type { Sealer } from '../../store/sealed.ts';
import { createClientStore } from './client-store.ts';
import { createCodeStore, createRefreshTokenStore } from './grant-stores.ts';
import { createIdpTokenStore } from './idp-token-store.ts';
import type { AuthStores, ConsentRecord, PendingAuthorization, PendingSignIn } from './records.ts';
import { createSealedRecords, storeKeys, type SealedRecords } from './sealed-records.ts';
import { createSessionStore } from './session-store.ts';

export { tokenHash } from './sealed-records.ts';

/** Options of {@link createAuthStores}. */
export interface AuthStoresOptions {
  store: Store;
  /** Seals every record (see the module comment). */
  sealer: Sealer;
  /** Where a value that does not open is reported (a warning with the record kind, never the key or value). Default: not reported. */
  logger?: Pick<Logger, 'warn'>;
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

/** Builds the domain stores over one storage port. Values are sealed JSON; see the module comment for keys. */
export function createAuthStores(options: AuthStoresOptions): AuthStores {
  const now = options.now ?? Date.now;
  const codeReuseWindowMs = options.codeReuseWindowMs ?? 15 * 60_000;
  if (!Number.isSafeInteger(codeReuseWindowMs) || codeReuseWindowMs <= 0) throw new TypeError('codeReuseWindowMs must be a positive integer');
  const records = createSealedRecords({ store: options.store, sealer: options.sealer, logger: options.logger, now });
  const idpTokens = createIdpTokenStore(records, { cacheSize: options.openedCacheSize ?? 10_000 });
  const sessions = createSessionStore(records, { forgetIdpTokens: idpTokens.forget });
  return {
    clients: createClientStore(records),
    consents: createConsentStore(records),
    pending: createSingleUseStore<PendingAuthorization>(records, storeKeys.pending),
    signIns: createSingleUseStore<PendingSignIn>(records, storeKeys.signIn),
    codes: createCodeStore(records, { reuseWindowMs: codeReuseWindowMs }),
    sessions,
    refreshTokens: createRefreshTokenStore(records, sessions),
    // Without `forget`: only ending a session drops an opened value.
    idpTokens: { get: idpTokens.get, put: idpTokens.put },
  };
}

/** A user's approvals, per user and client (`consent:<sub>:<client_id>`). */
function createConsentStore(records: SealedRecords): AuthStores['consents'] {
  return {
    async get(subject, clientId) {
      return records.read<ConsentRecord>(storeKeys.consent(subject, clientId));
    },
    async put(subject, clientId, consent, ttlMs) {
      const key = storeKeys.consent(subject, clientId);
      await records.store.set(key, records.seal(key, consent), ttlMs);
    },
  };
}

/** A sealed record parked under a random state and taken at most once (pending logins, sign-ins). */
function createSingleUseStore<T>(records: SealedRecords, keyOf: (state: string) => string) {
  return {
    async put(state: string, record: T, ttlMs: number): Promise<void> {
      const key = keyOf(state);
      await records.store.set(key, records.seal(key, record), ttlMs);
    },
    async take(state: string): Promise<T | undefined> {
      const key = keyOf(state);
      return records.open<T>(key, await records.store.take(key));
    },
  };
}
