/**
 * Sessions (`session:{<sid>}`) and the two indexes that find them: each user's sessions
 * (`user:<sub>:sessions`, for "sign out everywhere") and every session (`sessions`, for
 * operators' `mcpgate sessions list`).
 *
 * Index entries are sids sealed for the index's key name, so reading an index reveals no session
 * id and links no user to one. Sealing is randomised, so each session record keeps the exact
 * entries it added, for `revoke` to remove.
 */
import type { AuthStores, SessionRecord } from './records.ts';
import { CAS_ATTEMPTS, storeKeys, type SealedRecords } from './sealed-records.ts';

/** A stored session: the record and the exact (sealed) entry it added to its user's index. */
interface StoredSession {
  session: SessionRecord;
  indexEntry: string;
  /** The session's entry in the set of every session (absent on records written before that set existed). */
  allEntry?: string;
}

/** What the session store needs besides the sealed records. */
export interface SessionStoreDeps {
  /** Drops the in-process opened IdP tokens of a revoked session. */
  forgetIdpTokens(sessionId: string): void;
}

/** Builds the session store. */
export function createSessionStore(records: SealedRecords, deps: SessionStoreDeps): AuthStores['sessions'] {
  const { store, now, seal, read, ttlUntil } = records;
  const sessions: AuthStores['sessions'] = {
    async get(sessionId) {
      const stored = await read<StoredSession>(storeKeys.session(sessionId));
      // The sid inside must be the one asked for: a record sealed for this key always matches.
      return stored && stored.session.sessionId === sessionId && stored.session.expiresAt > now() ? stored.session : undefined;
    },
    async put(session) {
      const ttl = ttlUntil(session.expiresAt);
      if (ttl <= 0) throw new RangeError('session.expiresAt is in the past');
      const key = storeKeys.session(session.sessionId);
      // An existing session keeps its index entry (a second one would outlive it in the index).
      const existing = await read<StoredSession>(key);
      const indexEntry = existing?.session.subject === session.subject ? existing.indexEntry : seal(storeKeys.userSessions(session.subject), session.sessionId);
      const allEntry = existing?.allEntry ?? seal(storeKeys.allSessions(), session.sessionId);
      // Index first: a session missing from its user's index would survive "sign out everywhere".
      await store.addMembers(storeKeys.userSessions(session.subject), [indexEntry], ttl);
      await store.addMembers(storeKeys.allSessions(), [allEntry], ttl);
      await store.set(key, seal(key, { session, indexEntry, allEntry } satisfies StoredSession), ttl);
    },
    extend: (sessionId, expiresAt) => extendSession(records, sessionId, expiresAt),
    async listForUser(subject) {
      const indexKey = storeKeys.userSessions(subject);
      const sessionIds: string[] = [];
      const unreadable: string[] = [];
      for (const entry of await store.members(indexKey)) {
        const sessionId = records.open<string>(indexKey, entry);
        if (sessionId === undefined) unreadable.push(entry);
        else sessionIds.push(sessionId);
      }
      // An entry that does not open names no session anyone could end: dropped.
      if (unreadable.length > 0) await store.removeMembers(indexKey, unreadable);
      return sessionIds;
    },
    async listAll() {
      // Members never expire one by one: a session that ran out (or an entry that does not open) is dropped here.
      const allKey = storeKeys.allSessions();
      const live: string[] = [];
      const gone: string[] = [];
      for (const entry of await store.members(allKey)) {
        const sid = records.open<string>(allKey, entry);
        if (sid !== undefined && (await sessions.get(sid))) live.push(sid);
        else gone.push(entry);
      }
      if (gone.length > 0) await store.removeMembers(allKey, gone);
      return live;
    },
    async revoke(sessionId) {
      const stored = await read<StoredSession>(storeKeys.session(sessionId));
      // The session record goes first: every refresh and every gateway request checks it, so the
      // family is dead the moment this resolves even if the clean-up below fails half-way.
      await store.delete([storeKeys.session(sessionId), storeKeys.idp(sessionId)]);
      deps.forgetIdpTokens(sessionId);
      if (stored) await store.removeMembers(storeKeys.userSessions(stored.session.subject), [stored.indexEntry]);
      if (stored?.allEntry) await store.removeMembers(storeKeys.allSessions(), [stored.allEntry]);
    },
  };
  return sessions;
}

/** Slides a live session to `expiresAt` (never shortens it), its index entries and IdP tokens with it. */
async function extendSession(records: SealedRecords, sessionId: string, expiresAt: number): Promise<SessionRecord | undefined> {
  const { store, now, seal, ttlUntil } = records;
  const ttl = ttlUntil(expiresAt);
  if (ttl <= 0) throw new RangeError('expiresAt is in the past');
  const key = storeKeys.session(sessionId);
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const text = await store.get(key);
    const stored = records.open<StoredSession>(key, text);
    if (text === undefined || stored === undefined) return undefined;
    const { session, indexEntry, allEntry } = stored;
    if (session.expiresAt <= now()) return undefined;
    const extended: SessionRecord = { ...session, expiresAt: Math.max(session.expiresAt, expiresAt) };
    // Compare-and-set, not set: a revoke that lands between the read and the write wins.
    if (!(await store.compareAndSet(key, text, seal(key, { session: extended, indexEntry, allEntry } satisfies StoredSession), ttlUntil(extended.expiresAt)))) continue;
    await store.addMembers(storeKeys.userSessions(session.subject), [indexEntry], ttlUntil(extended.expiresAt));
    if (allEntry) await store.addMembers(storeKeys.allSessions(), [allEntry], ttlUntil(extended.expiresAt));
    // The IdP tokens must live as long as the session. Rewriting the same sealed bytes by
    // compare-and-set only moves the TTL, so an IdP refresh racing with this is never undone.
    const idpKey = storeKeys.idp(sessionId);
    const sealed = await store.get(idpKey);
    if (sealed !== undefined) await store.compareAndSet(idpKey, sealed, sealed, ttlUntil(extended.expiresAt));
    return extended;
  }
  throw new Error('session: compare-and-set did not settle');
}
