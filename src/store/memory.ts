/**
 * The in-process storage adapter: the default for a single replica and for tests.
 */
import { assertKey, assertTtl } from './checks.ts';
import { MemoryTable, setSize, valueSize } from './memory_table.ts';
import type { Store } from './port.ts';

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * Most keys held at once (a set counts as one key, whatever its size). Default `100_000`.
   * When a write would exceed it, expired keys are swept first, then the keys closest to
   * expiring are evicted.
   */
  maxEntries?: number;
  /**
   * Most bytes held at once (keys, values and set members, counted as V8 keeps strings: two bytes
   * a character, plus a fixed overhead per key and per member). Default 256 MiB. When a write
   * would exceed it, expired keys are swept first, then the keys closest to expiring are evicted;
   * a single value larger than the whole bound is refused (`StoreUnavailableError`).
   * A count bound alone let a flood of large values (16 KiB registrations) exhaust the heap.
   */
  maxBytes?: number;
  /** The clock, in epoch milliseconds. Default `Date.now`; tests pass a fake to skip time. */
  now?: () => number;
}

/**
 * Creates a store that keeps everything in this process's memory.
 *
 * - Expired keys are invisible at once, and removed when read, when room is needed, and by a
 *   sweep every minute (an unref'd timer, so an idle store never keeps the process alive).
 * - Bounded by `maxEntries` and `maxBytes`. When full, it evicts the keys **closest to expiring**, not the least
 *   recently used: a flood of short-lived entries (pending authorizations, codes) then evicts its
 *   own kind, not the 30-day refresh tokens of users who are simply idle.
 * - Every method body runs without awaiting, so `take`, `setIfAbsent`, `compareAndSet` and `deleteIfEquals` are
 *   atomic with respect to each other.
 * - Using one key as both a value and a set is a bug; it throws a `TypeError` (Valkey answers
 *   WRONGTYPE).
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): Store {
  const maxEntries = options.maxEntries ?? 100_000;
  if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) {
    throw new TypeError(`maxEntries must be a positive integer, got ${String(maxEntries)}`);
  }
  const maxBytes = options.maxBytes ?? 256 * 1024 * 1024;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) {
    throw new TypeError(`maxBytes must be a positive integer, got ${String(maxBytes)}`);
  }
  const table = new MemoryTable({ maxEntries, maxBytes, now: options.now ?? Date.now });
  return {
    get: (key, signal) => getValue(table, key, signal),
    set: (key, value, ttlMs, signal) => setValue(table, key, value, ttlMs, signal),
    setIfAbsent: (key, value, ttlMs, signal) => setValueIfAbsent(table, key, value, ttlMs, signal),
    take: (key, signal) => takeValue(table, key, signal),
    delete: (keys, signal) => deleteKeys(table, keys, signal),
    compareAndSet: (key, expected, value, ttlMs, signal) => compareAndSet(table, key, expected, value, ttlMs, signal),
    deleteIfEquals: (key, expected, signal) => deleteIfEquals(table, key, expected, signal),
    addMembers: (key, members, ttlMs, signal) => addMembers(table, key, members, ttlMs, signal),
    removeMembers: (key, members, signal) => removeMembers(table, key, members, signal),
    members: (key, signal) => listMembers(table, key, signal),
    async ping(signal) {
      table.enter(signal);
    },
    async close() {
      table.close();
    },
  };
}

// The operations below are async only so that a throw becomes a rejection: none of them awaits,
// which is what makes each one atomic.

async function getValue(table: MemoryTable, key: string, signal: AbortSignal | undefined): Promise<string | undefined> {
  table.enter(signal);
  assertKey(key);
  return table.liveValue(key)?.value;
}

async function setValue(table: MemoryTable, key: string, value: string, ttlMs: number, signal: AbortSignal | undefined): Promise<void> {
  table.enter(signal);
  assertKey(key);
  assertTtl(ttlMs);
  table.put(key, { kind: 'value', value, expiresAt: table.now() + ttlMs, size: valueSize(key, value) });
}

async function setValueIfAbsent(table: MemoryTable, key: string, value: string, ttlMs: number, signal: AbortSignal | undefined): Promise<boolean> {
  table.enter(signal);
  assertKey(key);
  assertTtl(ttlMs);
  // Like SET NX: a key of either kind counts as present.
  if (table.live(key) !== undefined) return false;
  table.put(key, { kind: 'value', value, expiresAt: table.now() + ttlMs, size: valueSize(key, value) });
  return true;
}

async function takeValue(table: MemoryTable, key: string, signal: AbortSignal | undefined): Promise<string | undefined> {
  table.enter(signal);
  assertKey(key);
  const entry = table.liveValue(key);
  if (entry === undefined) return undefined;
  table.drop(key);
  return entry.value;
}

async function deleteKeys(table: MemoryTable, keys: string | string[], signal: AbortSignal | undefined): Promise<void> {
  table.enter(signal);
  const list = typeof keys === 'string' ? [keys] : keys;
  list.forEach(assertKey);
  for (const key of list) table.drop(key);
}

async function compareAndSet(
  table: MemoryTable,
  key: string,
  expected: string | undefined,
  value: string,
  ttlMs: number,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  table.enter(signal);
  assertKey(key);
  assertTtl(ttlMs);
  if (table.liveValue(key)?.value !== expected) return false;
  table.put(key, { kind: 'value', value, expiresAt: table.now() + ttlMs, size: valueSize(key, value) });
  return true;
}

async function deleteIfEquals(table: MemoryTable, key: string, expected: string, signal: AbortSignal | undefined): Promise<boolean> {
  table.enter(signal);
  assertKey(key);
  if (table.liveValue(key)?.value !== expected) return false;
  table.drop(key);
  return true;
}

async function addMembers(table: MemoryTable, key: string, members: string[], ttlMs: number, signal: AbortSignal | undefined): Promise<void> {
  table.enter(signal);
  assertKey(key);
  assertTtl(ttlMs);
  if (members.length === 0) return;
  const entry = table.liveSet(key);
  const all = new Set(entry?.members);
  for (const member of members) all.add(member);
  if (entry !== undefined && all.size === entry.members.size && entry.expiresAt >= table.now() + ttlMs) return;
  // Rebuilt and put again, so growth is counted and makes room like any write.
  table.put(key, { kind: 'set', members: all, expiresAt: Math.max(entry?.expiresAt ?? 0, table.now() + ttlMs), size: setSize(key, all) });
}

async function removeMembers(table: MemoryTable, key: string, members: string[], signal: AbortSignal | undefined): Promise<void> {
  table.enter(signal);
  assertKey(key);
  const entry = table.liveSet(key);
  if (entry === undefined) return;
  for (const member of members) table.removeMember(entry, member);
  // Like Valkey, an empty set does not exist.
  if (entry.members.size === 0) table.drop(key);
}

async function listMembers(table: MemoryTable, key: string, signal: AbortSignal | undefined): Promise<string[]> {
  table.enter(signal);
  assertKey(key);
  return [...(table.liveSet(key)?.members ?? [])];
}
