/**
 * Sessions (`session:{<sid>}`) and the two indexes that find them: each user's sessions
 * (`user:<sub>:sessions`, for "sign out everywhere") and every session (`sessions`, for
 * operators' `mcpgate sessions list`).
 *
 * Index entries are sids sealed for the index's key name, so reading an index reveals no session
 * id and links no user to one. Sealing is randomised, so each session record keeps the exact
 * entries it added, for `revoke` to remove.
 *
 * The rule that keeps the indexes exact while replicas (and `mcpgate keys reseal`, which swaps a
 * session's entries for ones sealed under the current key) change the same session at once: an
 * entry is the session's when the stored record names it. Whoever writes a record adds its entries
 * first, then writes the record by compare-and-set; when that fails, it removes the entries it added
 * that the record now stored does not name. Whoever replaces a record's entries removes the old
 * ones only after the record naming the new ones is stored; `revoke` takes the record (read and
 * delete in one step) and removes exactly the entries the record it took names. So an entry is
 * never removed while the stored record names it, and one the record stops naming is removed by
 * whoever made it stop.
 */
import type { AuthStores, SessionRecord } from './records.ts';
import { CAS_ATTEMPTS, storeKeys, type SealedRecords } from './sealed-records.ts';

/** A stored session: the record and the exact (sealed) entries it added to the indexes. */
export interface StoredSession {
  session: SessionRecord;
  /** The session's entry in its user's index. */
  indexEntry: string;
  /** The session's entry in the set of every session (absent on records written before that set existed). */
  allEntry?: string;
}

/** One index entry: the set it is in and the member. */
export type IndexEntry = readonly [set: string, member: string];

/** The index entries a stored session names. */
export function entriesOf(stored: StoredSession): IndexEntry[] {
  const entries: IndexEntry[] = [[storeKeys.userSessions(stored.session.subject), stored.indexEntry]];
  if (stored.allEntry !== undefined) entries.push([storeKeys.allSessions(), stored.allEntry]);
  return entries;
}

/** Adds each entry to its set, extending the set's TTL to at least `ttlMs`. */
export async function addEntries(records: SealedRecords, entries: readonly IndexEntry[], ttlMs: number): Promise<void> {
  for (const [set, member] of entries) await records.store.addMembers(set, [member], ttlMs);
}

/** Removes each entry from its set. */
export async function removeEntries(records: SealedRecords, entries: readonly IndexEntry[]): Promise<void> {
  for (const [set, member] of entries) await records.store.removeMembers(set, [member]);
}

/**
 * After a compare-and-set of the session record failed: removes those of `added` (entries this
 * caller put in the indexes) that the record stored now does not name, so an entry nobody's record
 * names is not left behind. Those it names stay: another writer committed them.
 */
export async function settleEntries(records: SealedRecords, sessionId: string, added: readonly IndexEntry[]): Promise<void> {
  const stored = await records.read<StoredSession>(storeKeys.session(sessionId));
  const named = new Set(stored && stored.session.sessionId === sessionId ? entriesOf(stored).map(([set, member]) => `${set}\n${member}`) : []);
  await removeEntries(records, added.filter(([set, member]) => !named.has(`${set}\n${member}`)));
}

/** What the session store needs besides the sealed records. */
export interface SessionStoreDeps {
  /** Drops the in-process opened IdP tokens of a revoked session. */
  forgetIdpTokens(sessionId: string): void;
}

/** Builds the session store. */
export function createSessionStore(records: SealedRecords, deps: SessionStoreDeps): AuthStores['sessions'] {
  const { store, now, read } = records;
  const sessions: AuthStores['sessions'] = {
    async get(sessionId) {
      const stored = await read<StoredSession>(storeKeys.session(sessionId));
      // The sid inside must be the one asked for: a record sealed for this key always matches.
      return stored && stored.session.sessionId === sessionId && stored.session.expiresAt > now() ? stored.session : undefined;
    },
    put: (session) => putSession(records, session),
    extend: (sessionId, expiresAt) => extendSession(records, sessionId, expiresAt),
    async listForUser(subject) {
      const indexKey = storeKeys.userSessions(subject);
      const sessionIds = new Set<string>();
      const unreadable: string[] = [];
      for (const entry of await store.members(indexKey)) {
        const sessionId = records.open<string>(indexKey, entry);
        if (sessionId === undefined) unreadable.push(entry);
        else sessionIds.add(sessionId);
      }
      // An entry that does not open names no session anyone could end: dropped.
      if (unreadable.length > 0) await store.removeMembers(indexKey, unreadable);
      // A set, not a list: while a session's entries are swapped (a reseal) it briefly has two.
      return [...sessionIds];
    },
    async listAll() {
      // Members never expire one by one: a session that ran out (or an entry that does not open) is dropped here.
      const allKey = storeKeys.allSessions();
      const live = new Set<string>();
      const gone: string[] = [];
      for (const entry of await store.members(allKey)) {
        const sid = records.open<string>(allKey, entry);
        if (sid !== undefined && (live.has(sid) || (await sessions.get(sid)))) live.add(sid);
        else gone.push(entry);
      }
      if (gone.length > 0) await store.removeMembers(allKey, gone);
      return [...live];
    },
    async revoke(sessionId) {
      const key = storeKeys.session(sessionId);
      // The session record goes first: every refresh and every gateway request checks it, so the
      // family is dead the moment this resolves even if the clean-up below fails half-way. Taken
      // (read and deleted at once), so the entries removed below are those of the record that was
      // stored last, even if a replica or a reseal swapped them a moment ago.
      const text = await store.take(key);
      await store.delete(storeKeys.idp(sessionId));
      deps.forgetIdpTokens(sessionId);
      const stored = records.open<StoredSession>(key, text);
      if (stored) await removeEntries(records, entriesOf(stored));
    },
  };
  return sessions;
}

/**
 * Creates a session, or rewrites one (keeping its index entries while its user is the same).
 * Index first: a session missing from its user's index would survive "sign out everywhere".
 */
async function putSession(records: SealedRecords, session: SessionRecord): Promise<void> {
  const { store, seal, ttlUntil } = records;
  const ttl = ttlUntil(session.expiresAt);
  if (ttl <= 0) throw new RangeError('session.expiresAt is in the past');
  const key = storeKeys.session(session.sessionId);
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const text = await store.get(key);
    const existing = records.open<StoredSession>(key, text);
    // An existing session keeps its entries (a second one would outlive it in the index).
    const stored: StoredSession = {
      session,
      indexEntry: existing?.session.subject === session.subject ? existing.indexEntry : seal(storeKeys.userSessions(session.subject), session.sessionId),
      allEntry: existing?.allEntry ?? seal(storeKeys.allSessions(), session.sessionId),
    };
    const entries = entriesOf(stored);
    await addEntries(records, entries, ttl);
    if (await store.compareAndSet(key, text, seal(key, stored), ttl)) {
      // A session moved to another user leaves the previous user's index.
      if (existing) await removeEntries(records, entriesOf(existing).filter(([set, member]) => !entries.some(([s, m]) => s === set && m === member)));
      return;
    }
    await settleEntries(records, session.sessionId, entries);
  }
  throw new Error('session: compare-and-set did not settle');
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
    const { session } = stored;
    if (session.expiresAt <= now()) return undefined;
    const extended: SessionRecord = { ...session, expiresAt: Math.max(session.expiresAt, expiresAt) };
    // The index sets live as long as their longest session: their TTL moves first (the entries
    // are re-added), then the record. Compare-and-set, not set: a revoke, or a reseal swapping
    // the entries, that lands between the read and the write wins, and the entries re-added here
    // are taken out again unless the record stored now names them.
    const entries = entriesOf(stored);
    await addEntries(records, entries, ttlUntil(extended.expiresAt));
    if (!(await store.compareAndSet(key, text, seal(key, { ...stored, session: extended } satisfies StoredSession), ttlUntil(extended.expiresAt)))) {
      await settleEntries(records, sessionId, entries);
      continue;
    }
    // The IdP tokens must live as long as the session. Rewriting the same sealed bytes by
    // compare-and-set only moves the TTL, so an IdP refresh racing with this is never undone.
    const idpKey = storeKeys.idp(sessionId);
    const sealed = await store.get(idpKey);
    if (sealed !== undefined) await store.compareAndSet(idpKey, sealed, sealed, ttlUntil(extended.expiresAt));
    return extended;
  }
  throw new Error('session: compare-and-set did not settle');
}
