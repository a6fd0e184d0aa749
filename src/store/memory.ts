/**
 * The in-process storage adapter: the default for a single replica and for tests.
 */
import { assertKey, assertTtl } from './checks.ts';
import { ExpiryHeap } from './expiry_heap.ts';
import { StoreUnavailableError, type Store } from './port.ts';

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

interface ValueEntry {
  readonly kind: 'value';
  readonly value: string;
  readonly expiresAt: number;
  /** Bytes counted for this key (see `maxBytes`). */
  readonly size: number;
}

interface SetEntry {
  readonly kind: 'set';
  readonly members: Set<string>;
  expiresAt: number;
  size: number;
}

type Entry = ValueEntry | SetEntry;

interface Deadline {
  readonly at: number;
  readonly key: string;
  readonly entry: Entry;
}

/** How often expired keys are dropped even if nobody reads them (they are invisible anyway). */
const SWEEP_INTERVAL_MS = 60_000;
/** Bytes counted per key beyond its characters (the Map slot, the entry object, its deadline). */
const KEY_OVERHEAD = 128;
/** Bytes counted per set member beyond its characters. */
const MEMBER_OVERHEAD = 48;

function valueSize(key: string, value: string): number {
  return KEY_OVERHEAD + 2 * (key.length + value.length);
}

function memberSize(member: string): number {
  return MEMBER_OVERHEAD + 2 * member.length;
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
  const now = options.now ?? Date.now;
  const entries = new Map<string, Entry>();
  let bytes = 0;
  const deadlines = new ExpiryHeap<Deadline>();
  let closed = false;
  const sweeper = setInterval(sweep, SWEEP_INTERVAL_MS);
  sweeper.unref();

  function enter(signal: AbortSignal | undefined): void {
    signal?.throwIfAborted();
    if (closed) throw new StoreUnavailableError('memory store is closed');
  }

  /** The live entry under `key`; an expired one is dropped on the way. */
  function live(key: string): Entry | undefined {
    const entry = entries.get(key);
    if (entry !== undefined && entry.expiresAt <= now()) {
      drop(key);
      return undefined;
    }
    return entry;
  }

  function liveValue(key: string): ValueEntry | undefined {
    const entry = live(key);
    if (entry?.kind === 'set') throw new TypeError('store key holds a set, not a value');
    return entry;
  }

  function liveSet(key: string): SetEntry | undefined {
    const entry = live(key);
    if (entry?.kind === 'value') throw new TypeError('store key holds a value, not a set');
    return entry;
  }

  /** Removes a key and its bytes from the count. */
  function drop(key: string): void {
    const entry = entries.get(key);
    if (entry === undefined) return;
    bytes -= entry.size;
    entries.delete(key);
  }

  function put(key: string, entry: Entry): void {
    if (entry.size > maxBytes) {
      throw new StoreUnavailableError(`memory store: a value of ${entry.size} bytes is larger than the whole store (storage.memory.maxBytes)`);
    }
    // The old value's bytes are freed first, so an overwrite neither counts twice nor evicts itself.
    drop(key);
    makeRoom(entry.size);
    entries.set(key, entry);
    bytes += entry.size;
    schedule(key, entry);
  }

  function schedule(key: string, entry: Entry): void {
    deadlines.push({ at: entry.expiresAt, key, entry });
    // Overwrites leave stale deadlines behind; rebuild before they outnumber the live ones.
    if (deadlines.size > 2 * entries.size + 1024) {
      deadlines.rebuild([...entries].map(([k, e]) => ({ at: e.expiresAt, key: k, entry: e })));
    }
  }

  function isCurrent(deadline: Deadline): boolean {
    return entries.get(deadline.key) === deadline.entry && deadline.entry.expiresAt === deadline.at;
  }

  function sweep(): void {
    const t = now();
    for (let next = deadlines.peek(); next !== undefined && next.at <= t; next = deadlines.peek()) {
      deadlines.pop();
      if (isCurrent(next)) drop(next.key);
    }
  }

  /** Room for one more key of `size` bytes. */
  function makeRoom(size: number): void {
    const full = () => entries.size >= maxEntries || bytes + size > maxBytes;
    if (!full()) return;
    sweep();
    // Every live entry has a current deadline in the heap, so the heap runs out last.
    while (full()) {
      const next = deadlines.pop();
      if (next === undefined) break;
      if (isCurrent(next)) drop(next.key);
    }
  }

  return {
    async get(key, signal) {
      enter(signal);
      assertKey(key);
      return liveValue(key)?.value;
    },

    async set(key, value, ttlMs, signal) {
      enter(signal);
      assertKey(key);
      assertTtl(ttlMs);
      put(key, { kind: 'value', value, expiresAt: now() + ttlMs, size: valueSize(key, value) });
    },

    async setIfAbsent(key, value, ttlMs, signal) {
      enter(signal);
      assertKey(key);
      assertTtl(ttlMs);
      // Like SET NX: a key of either kind counts as present.
      if (live(key) !== undefined) return false;
      put(key, { kind: 'value', value, expiresAt: now() + ttlMs, size: valueSize(key, value) });
      return true;
    },

    async take(key, signal) {
      enter(signal);
      assertKey(key);
      const entry = liveValue(key);
      if (entry === undefined) return undefined;
      drop(key);
      return entry.value;
    },

    async delete(keys, signal) {
      enter(signal);
      const list = typeof keys === 'string' ? [keys] : keys;
      list.forEach(assertKey);
      for (const key of list) drop(key);
    },

    async compareAndSet(key, expected, value, ttlMs, signal) {
      enter(signal);
      assertKey(key);
      assertTtl(ttlMs);
      if (liveValue(key)?.value !== expected) return false;
      put(key, { kind: 'value', value, expiresAt: now() + ttlMs, size: valueSize(key, value) });
      return true;
    },

    async deleteIfEquals(key, expected, signal) {
      enter(signal);
      assertKey(key);
      if (liveValue(key)?.value !== expected) return false;
      entries.delete(key);
      return true;
    },

    async addMembers(key, members, ttlMs, signal) {
      enter(signal);
      assertKey(key);
      assertTtl(ttlMs);
      if (members.length === 0) return;
      const entry = liveSet(key);
      const all = new Set(entry?.members);
      for (const member of members) all.add(member);
      if (entry !== undefined && all.size === entry.members.size && entry.expiresAt >= now() + ttlMs) return;
      // Rebuilt and put again, so growth is counted and makes room like any write.
      let size = KEY_OVERHEAD + 2 * key.length;
      for (const member of all) size += memberSize(member);
      put(key, { kind: 'set', members: all, expiresAt: Math.max(entry?.expiresAt ?? 0, now() + ttlMs), size });
    },

    async removeMembers(key, members, signal) {
      enter(signal);
      assertKey(key);
      const entry = liveSet(key);
      if (entry === undefined) return;
      for (const member of members) {
        if (entry.members.delete(member)) {
          entry.size -= memberSize(member);
          bytes -= memberSize(member);
        }
      }
      // Like Valkey, an empty set does not exist.
      if (entry.members.size === 0) drop(key);
    },

    async members(key, signal) {
      enter(signal);
      assertKey(key);
      return [...(liveSet(key)?.members ?? [])];
    },

    async ping(signal) {
      enter(signal);
    },

    async close() {
      closed = true;
      clearInterval(sweeper);
      entries.clear();
      bytes = 0;
      deadlines.rebuild([]);
    },
  };
}
