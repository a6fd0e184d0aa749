/**
 * Retiring an encryption key: every sealed value still sealed under an older key is opened and
 * sealed again under the first one, in place, so the older key can then be removed from
 * `storage.encryptionKeys` without making anything unreadable.
 *
 * Safe while the fleet serves: each value is replaced only if it is still exactly the bytes that
 * were read (compare-and-set on the server), keeping the key's remaining time to live. A value a
 * serving replica rewrote meanwhile is left as that replica wrote it and counted; a rerun picks it
 * up. Idempotent: a value already under the first key is only checked, never rewritten.
 * Unsealed values (JSON records, ids, counters) are left alone. Sets are not values: the members
 * of the session indexes are sealed, and each is swapped for a new one by
 * `authserver/records/session-index-reseal.ts`, which knows the records that name them; its counts
 * are reported here with the values' ({@link IndexResealReport}).
 *
 * Relies on the stores' rule that a value is sealed for the name of the key it is stored under
 * (the additional data): a value sealed for another name does not open here and is counted as
 * unreadable, never rewritten.
 */
import { createSealer, SealedValueError, sealedKeyId, type SealingKey } from './sealed.ts';

/**
 * What resealing needs from a backend: a walk over every key and an in-place swap that keeps the
 * TTL. A maintenance interface of its own, so the request path's `Store` port does not grow
 * operations only an operator's command uses.
 */
export interface SealedValueSource {
  /** Every key holding a plain value (not a set), by its name without the key prefix, in batches. */
  names(signal?: AbortSignal): AsyncIterable<string[]>;
  /** Every key holding a set, by its name without the key prefix, in batches. */
  setNames(signal?: AbortSignal): AsyncIterable<string[]>;
  /** The value under `name`, or `undefined` when it is gone. */
  get(name: string, signal?: AbortSignal): Promise<string | undefined>;
  /**
   * Replaces the value only when it is still `expected`, keeping the remaining TTL (never making a
   * value live longer, or for ever). `changed`: someone wrote it meanwhile; `gone`: it expired or
   * was deleted.
   */
  replace(name: string, expected: string, value: string, signal?: AbortSignal): Promise<'replaced' | 'changed' | 'gone'>;
  /** Releases the connection. */
  close(): Promise<void>;
}

/** What a reseal run found and did. */
export interface ResealReport {
  /** The key every sealed value is now meant to be under. */
  sealingKeyId: string;
  /** Keys holding a plain value that were looked at. */
  scanned: number;
  /** Sealed under an older key, now sealed under the first. */
  resealed: number;
  /** Already sealed under the first key (and opened fine). */
  current: number;
  /** Rewritten by someone else between the read and the swap, every attempt: left alone; a rerun picks them up. */
  changed: number;
  /** Expired or deleted while the run looked at them: nothing to do. */
  gone: number;
  /** Not sealed values (records without secrets, ids, counters): left alone. */
  notSealed: number;
  /** Sealed values no configured key opens (unknown key id, or failing authentication). */
  unreadable: number;
  /** The key ids the unreadable values name, with how many each (ids are not secret; values never appear). */
  unreadableKeyIds: Record<string, number>;
  /** What the pass over the session indexes did, when it ran. */
  indexes?: IndexResealReport;
}

/** What the pass over the session indexes (sets whose members are sealed session ids) found and did. */
export interface IndexResealReport {
  /** Session records looked at. */
  sessions: number;
  /** Index members looked at. */
  members: number;
  /** Index entries swapped for one sealed under the first key (the session record's copy with them). */
  resealed: number;
  /** Index entries of the sessions looked at that were already under the first key. */
  current: number;
  /** Entries under an older key that no stored session names (left by a session that ended, or by a cut-short swap): removed. */
  stale: number;
  /** Sessions rewritten by a replica at every attempt: left as they are; a rerun picks them up. */
  changed: number;
  /** Entries no configured key opens: left as they are (listing drops them). */
  unreadable: number;
  /** The key ids the unreadable entries name, with how many each. */
  unreadableKeyIds: Record<string, number>;
}

/** Options of {@link resealValues}. */
export interface ResealOptions {
  source: SealedValueSource;
  /** `storage.encryptionKeys`: the first seals, all open. */
  keys: readonly SealingKey[];
  /** Values handled at once (default 32): bounded, so a large store does not flood Valkey. */
  concurrency?: number;
  signal?: AbortSignal;
}

/** Attempts per value when a replica keeps rewriting it; past them the value is counted as changed. */
const ATTEMPTS = 3;

/**
 * Walks every value of the store and reseals those under an older key with the first key.
 * Throws `StoreUnavailableError` (from the source) when the backend fails; a run cut short can be
 * rerun from the start, since every step is idempotent.
 */
export async function resealValues(options: ResealOptions): Promise<ResealReport> {
  const { source, keys, signal } = options;
  const concurrency = options.concurrency ?? 32;
  const sealer = createSealer({ keys });
  const sealingKeyId = keys[0]!.id;
  const report: ResealReport = {
    sealingKeyId,
    scanned: 0,
    resealed: 0,
    current: 0,
    changed: 0,
    gone: 0,
    notSealed: 0,
    unreadable: 0,
    unreadableKeyIds: {},
  };

  async function handle(name: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const value = await source.get(name, signal);
      if (value === undefined) {
        report.gone++;
        return;
      }
      const id = sealedKeyId(value);
      if (id === undefined) {
        report.notSealed++;
        return;
      }
      let plaintext: string;
      try {
        // The additional data is the key's name: the same name seals it again.
        plaintext = sealer.open(name, value);
      } catch (error) {
        if (!(error instanceof SealedValueError)) throw error;
        report.unreadable++;
        report.unreadableKeyIds[id] = (report.unreadableKeyIds[id] ?? 0) + 1;
        return;
      }
      if (id === sealingKeyId) {
        report.current++;
        return;
      }
      const outcome = await source.replace(name, value, sealer.seal(name, plaintext), signal);
      if (outcome === 'replaced') {
        report.resealed++;
        return;
      }
      if (outcome === 'gone') {
        report.gone++;
        return;
      }
      // A replica wrote it meanwhile (most likely under the first key already): look again.
      if (attempt >= ATTEMPTS) {
        report.changed++;
        return;
      }
    }
  }

  for await (const batch of source.names(signal)) {
    report.scanned += batch.length;
    for (let i = 0; i < batch.length; i += concurrency) {
      await Promise.all(batch.slice(i, i + concurrency).map(handle));
    }
  }
  return report;
}

/** True when every sealed value and index entry is now under the first key: the older keys can be removed. */
export function resealComplete(report: ResealReport): boolean {
  const indexes = report.indexes;
  return report.unreadable === 0 && report.changed === 0 && (indexes === undefined || (indexes.unreadable === 0 && indexes.changed === 0));
}

/** The report as the CLI prints it: counts only, never a value or a key name. */
export function formatResealReport(report: ResealReport): string {
  const rows: Array<[string, number, string?]> = [
    ['scanned', report.scanned, 'keys holding a value'],
    ['resealed', report.resealed, `now sealed under "${report.sealingKeyId}"`],
    ['already current', report.current],
    ['changed meanwhile', report.changed, report.changed > 0 ? 'rewritten by a replica during the run: run it again' : undefined],
    ['gone', report.gone, 'expired or deleted during the run'],
    ['not sealed', report.notSealed, 'left alone'],
    ['unreadable', report.unreadable, report.unreadable > 0 ? `no configured key opens them (${describeIds(report.unreadableKeyIds)})` : undefined],
  ];
  const line = ([label, count, note]: [string, number, string?]): string => `  ${`${label}:`.padEnd(19)}${String(count).padStart(7)}${note ? `  ${note}` : ''}`;
  const lines = ['sealed values:', ...rows.map(line)];
  const indexes = report.indexes;
  if (indexes) {
    const indexRows: Array<[string, number, string?]> = [
      ['sessions', indexes.sessions, 'session records looked at'],
      ['members', indexes.members, 'members of the user and all-sessions indexes'],
      ['resealed', indexes.resealed, `entries swapped for one sealed under "${report.sealingKeyId}"`],
      ['already current', indexes.current],
      ['stale removed', indexes.stale, 'entries under an older key that named no live session'],
      ['changed meanwhile', indexes.changed, indexes.changed > 0 ? 'sessions rewritten by a replica during the run: run it again' : undefined],
      ['unreadable', indexes.unreadable, indexes.unreadable > 0 ? `no configured key opens them (${describeIds(indexes.unreadableKeyIds)})` : undefined],
    ];
    lines.push('session index entries:', ...indexRows.map(line));
  }
  return `${lines.join('\n')}\n`;
}

function describeIds(ids: Record<string, number>): string {
  return Object.entries(ids)
    .map(([id, n]) => `${n} under key id "${id}"`)
    .join(', ');
}
