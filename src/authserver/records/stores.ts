/**
 * The domain stores of our authorization server, written once above the storage
 * port so every backend (memory, Valkey) gets the same token families, indexes and sealing.
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
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../../observability/logger.ts';
import type { Store } from '../../store/port.ts';
import { SealedValueError, type Sealer } from '../../store/sealed.ts';
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

/** A stored code: live, or consumed (then only the session it was issued to is kept). */
type StoredCode = { live: AuthorizationCodeRecord } | { usedBy: string };

/** A stored session: the record and the exact (sealed) entry it added to its user's index. */
interface StoredSession {
  session: SessionRecord;
  indexEntry: string;
  /** The session's entry in the set of every session (absent on records written before that set existed). */
  allEntry?: string;
}

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

/** Builds the domain stores over one storage port. Values are sealed JSON; see the module comment for keys. */
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
    allSessions: () => 'sessions',
    refreshToken: (token: string) => `rt:${tokenHash(token)}`,
  };

  /** The kind of record a key holds, for the log (the rest of a key name is an id or a hash). */
  function kindOf(key: string): string {
    return key.slice(0, key.indexOf(':'));
  }

  function seal(key: string, value: unknown): string {
    return sealer.seal(key, JSON.stringify(value));
  }

  /**
   * Opens a value sealed for `key`. One that does not open (forged, copied from another key, or
   * sealed under a key no longer configured) is reported and treated as absent: it must grant
   * nothing, and "not there" is the answer every caller already handles safely.
   */
  function open<T>(key: string, text: string | undefined): T | undefined {
    if (text === undefined) return undefined;
    let plain: string;
    try {
      plain = sealer.open(key, text);
    } catch (error) {
      if (!(error instanceof SealedValueError)) throw error;
      options.logger?.warn({ msg: 'a stored record did not open: ignored (tampered, copied from another key, or sealed under a removed key)', record: kindOf(key), reason: error.reason });
      return undefined;
    }
    return JSON.parse(plain) as T;
  }

  async function read<T>(key: string): Promise<T | undefined> {
    return open<T>(key, await store.get(key));
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
    const value = open<IdpTokens>(key, sealed);
    opened.delete(key);
    if (value === undefined) return undefined;
    if (opened.size >= openedCacheSize) opened.delete(opened.keys().next().value!);
    opened.set(key, { sealed, value });
    return value;
  }

  /** A sealed record parked under a random state and taken at most once (pending logins, sign-ins). */
  function singleUseSealed<T>(keyOf: (state: string) => string) {
    return {
      async put(state: string, record: T, ttlMs: number): Promise<void> {
        const key = keyOf(state);
        await store.set(key, seal(key, record), ttlMs);
      },
      async take(state: string): Promise<T | undefined> {
        const key = keyOf(state);
        return open<T>(key, await store.take(key));
      },
    };
  }

  /** A deadline turned into a TTL; a deadline already passed means "do not store". */
  function ttlUntil(deadline: number): number {
    return Math.ceil(deadline - now());
  }

  /** The session's entry in its user's index: its sid, sealed for the index key. */
  function indexEntryFor(session: SessionRecord): string {
    return seal(keys.userSessions(session.subject), session.sessionId);
  }

  const sessions: AuthStores['sessions'] = {
    async get(sessionId) {
      const stored = await read<StoredSession>(keys.session(sessionId));
      // The sid inside must be the one asked for: a record sealed for this key always matches.
      return stored && stored.session.sessionId === sessionId && stored.session.expiresAt > now() ? stored.session : undefined;
    },
    async put(session) {
      const ttl = ttlUntil(session.expiresAt);
      if (ttl <= 0) throw new RangeError('session.expiresAt is in the past');
      const key = keys.session(session.sessionId);
      // An existing session keeps its index entry (a second one would outlive it in the index).
      const existing = await read<StoredSession>(key);
      const indexEntry = existing?.session.subject === session.subject ? existing.indexEntry : indexEntryFor(session);
      const allEntry = existing?.allEntry ?? seal(keys.allSessions(), session.sessionId);
      // Index first: a session missing from its user's index would survive "sign out everywhere".
      await store.addMembers(keys.userSessions(session.subject), [indexEntry], ttl);
      await store.addMembers(keys.allSessions(), [allEntry], ttl);
      await store.set(key, seal(key, { session, indexEntry, allEntry } satisfies StoredSession), ttl);
    },
    async extend(sessionId, expiresAt) {
      const ttl = ttlUntil(expiresAt);
      if (ttl <= 0) throw new RangeError('expiresAt is in the past');
      const key = keys.session(sessionId);
      for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        const text = await store.get(key);
        const stored = open<StoredSession>(key, text);
        if (text === undefined || stored === undefined) return undefined;
        const { session, indexEntry, allEntry } = stored;
        if (session.expiresAt <= now()) return undefined;
        const extended: SessionRecord = { ...session, expiresAt: Math.max(session.expiresAt, expiresAt) };
        // Compare-and-set, not set: a revoke that lands between the read and the write wins.
        if (!(await store.compareAndSet(key, text, seal(key, { session: extended, indexEntry, allEntry } satisfies StoredSession), ttlUntil(extended.expiresAt)))) continue;
        await store.addMembers(keys.userSessions(session.subject), [indexEntry], ttlUntil(extended.expiresAt));
        if (allEntry) await store.addMembers(keys.allSessions(), [allEntry], ttlUntil(extended.expiresAt));
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
      const indexKey = keys.userSessions(subject);
      const sessionIds: string[] = [];
      const unreadable: string[] = [];
      for (const entry of await store.members(indexKey)) {
        const sessionId = open<string>(indexKey, entry);
        if (sessionId === undefined) unreadable.push(entry);
        else sessionIds.push(sessionId);
      }
      // An entry that does not open names no session anyone could end: dropped.
      if (unreadable.length > 0) await store.removeMembers(indexKey, unreadable);
      return sessionIds;
    },
    async listAll() {
      // Members never expire one by one: a session that ran out (or an entry that does not open) is dropped here.
      const allKey = keys.allSessions();
      const live: string[] = [];
      const gone: string[] = [];
      for (const entry of await store.members(allKey)) {
        const sid = open<string>(allKey, entry);
        if (sid !== undefined && (await sessions.get(sid))) live.push(sid);
        else gone.push(entry);
      }
      if (gone.length > 0) await store.removeMembers(allKey, gone);
      return live;
    },
    async revoke(sessionId) {
      const stored = await read<StoredSession>(keys.session(sessionId));
      // The session record goes first: every refresh and every gateway request checks it, so the
      // family is dead the moment this resolves even if the clean-up below fails half-way.
      await store.delete([keys.session(sessionId), keys.idp(sessionId)]);
      opened.delete(keys.idp(sessionId));
      if (stored) await store.removeMembers(keys.userSessions(stored.session.subject), [stored.indexEntry]);
      if (stored?.allEntry) await store.removeMembers(keys.allSessions(), [stored.allEntry]);
    },
  };

  return {
    clients: {
      async get(clientId) {
        const client = await read<ClientRecord>(keys.client(clientId));
        return client?.clientId === clientId ? client : undefined;
      },
      async put(client, ttlMs) {
        const key = keys.client(client.clientId);
        await store.set(key, seal(key, client), ttlMs);
      },
      async admitUnused({ max, windowMs }) {
        const at = now();
        const window = Math.floor(at / windowMs);
        const retryAfterMs = (window + 1) * windowMs - at;
        // Fixed windows, counted by compare-and-set so every replica shares one count; kept for
        // two windows because the next window reads this one as its previous.
        const key = `registrations:unused:${window}`;
        const previous = Number((await store.get(`registrations:unused:${window - 1}`)) ?? 0);
        for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
          const text = await store.get(key);
          const count = Number(text ?? 0);
          if (count + previous >= max) return { admitted: false, retryAfterMs };
          if (await store.compareAndSet(key, text, String(count + 1), 2 * windowMs + 1000)) return { admitted: true, retryAfterMs: 0 };
        }
        // Contention this high means a flood: refusing is the safe side of a budget.
        return { admitted: false, retryAfterMs: 1000 };
      },
    },

    consents: {
      async get(subject, clientId) {
        return read<ConsentRecord>(keys.consent(subject, clientId));
      },
      async put(subject, clientId, consent, ttlMs) {
        const key = keys.consent(subject, clientId);
        await store.set(key, seal(key, consent), ttlMs);
      },
    },

    pending: singleUseSealed<PendingAuthorization>(keys.pending),
    signIns: singleUseSealed<PendingSignIn>(keys.signIn),

    codes: {
      async put(code, record, ttlMs) {
        const key = keys.code(code);
        await store.set(key, seal(key, { live: record } satisfies StoredCode), ttlMs);
      },
      async consume(code) {
        const key = keys.code(code);
        // One key, swapped from "live" to "used" by compare-and-set: of two concurrent
        // redemptions exactly one wins and the other sees the marker (and revokes the session).
        for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
          const text = await store.get(key);
          const stored = open<StoredCode>(key, text);
          if (text === undefined || stored === undefined) return undefined;
          if ('usedBy' in stored) return { sessionId: stored.usedBy, reused: true };
          const used: StoredCode = { usedBy: stored.live.sessionId };
          if (await store.compareAndSet(key, text, seal(key, used), codeReuseWindowMs)) {
            return { record: stored.live, reused: false };
          }
        }
        throw new Error('authorization code: compare-and-set did not settle');
      },
    },

    sessions,

    refreshTokens: {
      async put(token, record, ttlMs) {
        const key = keys.refreshToken(token);
        await store.set(key, seal(key, { record, expiresAt: now() + ttlMs } satisfies StoredRefreshToken), ttlMs);
      },
      async rotate(token, successor) {
        const key = keys.refreshToken(token);
        for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
          const text = await store.get(key);
          const stored = open<StoredRefreshToken>(key, text);
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
      },
      async delete(token) {
        await store.delete(keys.refreshToken(token));
      },
      async peek(token) {
        return (await read<StoredRefreshToken>(keys.refreshToken(token)))?.record;
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
        await store.set(key, seal(key, tokens), ttlMs);
      },
    },
  };
}
