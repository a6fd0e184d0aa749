/**
 * `mcpgate keys reseal` for the session indexes. The user index (`user:<sub>:sessions`) and the
 * index of every session (`sessions`) hold each session id sealed for the index's key name, and
 * each session record keeps a copy of its own entries so ending the session removes exactly them.
 * Resealing a value in place does not fit a set member (its bytes are the member), so a session's
 * entries under an older key are swapped: a new entry sealed under the first key is added, the
 * record is rewritten to name it (compare-and-set, so a replica's concurrent refresh, logout or
 * login wins and the swap is retried), and only then is the old entry removed. During the swap the
 * session is listed under both entries; listing returns each session once.
 *
 * Two walks, both safe while the fleet serves and both idempotent:
 * 1. every session record: its entries under an older key are swapped as above;
 * 2. every member of an index set still under an older key (a session created between the walks,
 *    or an entry left behind by a session that ended, or by an earlier swap cut short): the session
 *    it names is swapped if its record still names it, else the entry names no live session's
 *    entry and is removed.
 * Assumes every replica already seals under the first key (step 2 of the rotation), so new
 * sessions never add an entry under an older key while this runs.
 */
import type { Store } from '../../store/port.ts';
import type { IndexResealReport, SealedValueSource } from '../../store/reseal.ts';
import { SealedValueError, sealedKeyId, type Sealer } from '../../store/sealed.ts';
import { createSealedRecords, storeKeys, type SealedRecords } from './sealed-records.ts';
import { addEntries, removeEntries, settleEntries, type IndexEntry, type StoredSession } from './session-store.ts';

/** Attempts per session when a replica keeps rewriting its record; past them it is counted as changed. */
const ATTEMPTS = 3;

/** What swapping one session's entries came to. */
type SessionOutcome =
  | { outcome: 'resealed'; replaced: IndexEntry[]; current: number }
  | { outcome: 'current'; current: number }
  | { outcome: 'gone' | 'changed' | 'unopened' };

/** Options of {@link resealSessionIndexes}. */
export interface SessionIndexResealOptions {
  /** The walks over string keys (session records) and set keys (indexes). */
  source: Pick<SealedValueSource, 'names' | 'setNames'>;
  /** The store the replicas serve from: the swaps go through its compare-and-set and set operations. */
  store: Store;
  /** `storage.encryptionKeys`: the first seals, all open. */
  sealer: Sealer;
  /** The id of the first key: entries under any other are swapped. */
  sealingKeyId: string;
  /** Sessions or entries handled at once (default 32). */
  concurrency?: number;
  now?: () => number;
  signal?: AbortSignal;
}

/** The session id a record key names (`session:{<sid>}`), else undefined. */
function sessionIdOf(name: string): string | undefined {
  return /^session:\{(.+)\}$/.exec(name)?.[1];
}

/** True for the names of the two kinds of session index (subjects are percent-encoded: no `:` inside). */
function isSessionIndex(name: string): boolean {
  return name === storeKeys.allSessions() || /^user:[^:]*:sessions$/.test(name);
}

/** Swaps those of a session's entries that are under an older key for new ones under the first. */
async function resealSession(records: SealedRecords, sessionId: string, sealingKeyId: string): Promise<SessionOutcome> {
  const key = storeKeys.session(sessionId);
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const text = await records.store.get(key);
    if (text === undefined) return { outcome: 'gone' };
    const stored = records.open<StoredSession>(key, text);
    // A record no configured key opens is counted by the walk over values; its entries stay.
    if (stored === undefined) return { outcome: 'unopened' };
    if (stored.session.sessionId !== sessionId || stored.session.expiresAt <= records.now()) return { outcome: 'gone' };
    const next: StoredSession = { ...stored };
    const added: IndexEntry[] = [];
    const replaced: IndexEntry[] = [];
    const userSet = storeKeys.userSessions(stored.session.subject);
    if (sealedKeyId(stored.indexEntry) !== sealingKeyId) {
      next.indexEntry = records.seal(userSet, sessionId);
      added.push([userSet, next.indexEntry]);
      replaced.push([userSet, stored.indexEntry]);
    }
    if (stored.allEntry !== undefined && sealedKeyId(stored.allEntry) !== sealingKeyId) {
      next.allEntry = records.seal(storeKeys.allSessions(), sessionId);
      added.push([storeKeys.allSessions(), next.allEntry]);
      replaced.push([storeKeys.allSessions(), stored.allEntry]);
    }
    const current = (stored.allEntry === undefined ? 1 : 2) - added.length;
    if (added.length === 0) return { outcome: 'current', current };
    const ttl = records.ttlUntil(stored.session.expiresAt);
    // New entries first: the session is never missing from an index, only briefly in it twice.
    let swapped: boolean;
    try {
      await addEntries(records, added, ttl);
      swapped = await records.store.compareAndSet(key, text, records.seal(key, next), ttl);
    } catch (error) {
      // The store failed half-way: take back what the stored record does not name, if it answers
      // (otherwise the session is listed twice until it ends; a rerun swaps it).
      await settleEntries(records, sessionId, added).catch(() => undefined);
      throw error;
    }
    if (swapped) {
      await removeEntries(records, replaced);
      return { outcome: 'resealed', replaced, current };
    }
    // A replica rewrote or ended the session meanwhile: take back what the stored record does not name, look again.
    await settleEntries(records, sessionId, added);
  }
  return { outcome: 'changed' };
}

/** Runs both walks (see the module comment); throws `StoreUnavailableError` when the store fails (a rerun is safe). */
export async function resealSessionIndexes(options: SessionIndexResealOptions): Promise<IndexResealReport> {
  const { source, store, sealer, sealingKeyId, signal } = options;
  const concurrency = options.concurrency ?? 32;
  const records = createSealedRecords({ store, sealer, now: options.now ?? Date.now });
  const report: IndexResealReport = { sessions: 0, members: 0, resealed: 0, current: 0, stale: 0, changed: 0, unreadable: 0, unreadableKeyIds: {} };

  async function session(sessionId: string): Promise<void> {
    const result = await resealSession(records, sessionId, sealingKeyId);
    if (result.outcome === 'resealed') report.resealed += result.replaced.length;
    if (result.outcome === 'resealed' || result.outcome === 'current') report.current += result.current;
    if (result.outcome === 'changed') report.changed++;
  }

  async function member(set: string, entry: string): Promise<void> {
    const id = sealedKeyId(entry);
    // Under the first key: counted with its session in the first walk (or added since).
    if (id === sealingKeyId) return;
    let sessionId: string;
    try {
      sessionId = JSON.parse(sealer.open(set, entry)) as string;
    } catch (error) {
      if (!(error instanceof SealedValueError)) throw error;
      report.unreadable++;
      report.unreadableKeyIds[id ?? '?'] = (report.unreadableKeyIds[id ?? '?'] ?? 0) + 1;
      return;
    }
    const result = await resealSession(records, sessionId, sealingKeyId);
    if (result.outcome === 'changed') report.changed++;
    if (result.outcome === 'changed' || result.outcome === 'unopened') return;
    if (result.outcome === 'resealed') {
      report.resealed += result.replaced.length;
      if (result.replaced.some(([s, m]) => s === set && m === entry)) return;
    }
    // The stored record names only entries under the first key now, or is gone: this one is nobody's.
    await store.removeMembers(set, [entry], signal);
    report.stale++;
  }

  async function inBatches<T>(items: T[], handle: (item: T) => Promise<void>): Promise<void> {
    for (let i = 0; i < items.length; i += concurrency) {
      signal?.throwIfAborted();
      await Promise.all(items.slice(i, i + concurrency).map(handle));
    }
  }

  for await (const batch of source.names(signal)) {
    const ids = batch.map(sessionIdOf).filter((sid) => sid !== undefined);
    report.sessions += ids.length;
    await inBatches(ids, session);
  }
  for await (const batch of source.setNames(signal)) {
    for (const set of batch.filter(isSessionIndex)) {
      const entries = await store.members(set, signal);
      report.members += entries.length;
      await inBatches(entries, (entry) => member(set, entry));
    }
  }
  return report;
}
