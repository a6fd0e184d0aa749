/**
 * The memory store's table: keys with deadlines, bounded by a key count and a byte count. Expired
 * keys are invisible at once, and removed when read, when room is needed, and by a periodic sweep.
 * When full, it evicts the keys **closest to expiring**, not the least recently used: a flood of
 * short-lived entries (pending authorizations, codes) then evicts its own kind, not the 30-day
 * refresh tokens of users who are simply idle.
 */
import { ExpiryHeap } from './expiry_heap.ts';
import { StoreUnavailableError } from './port.ts';

/** A key holding one value. */
export interface ValueEntry {
  readonly kind: 'value';
  readonly value: string;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
  /** Bytes counted for this key (see `maxBytes`). */
  readonly size: number;
}

/** A key holding a set of members; changed in place when members are removed. */
export interface SetEntry {
  readonly kind: 'set';
  readonly members: Set<string>;
  /** Epoch milliseconds. */
  expiresAt: number;
  /** Bytes counted for this key and its members. */
  size: number;
}

/** What a key holds. */
export type Entry = ValueEntry | SetEntry;

interface Deadline {
  readonly at: number;
  readonly key: string;
  readonly entry: Entry;
}

/** Options of {@link MemoryTable}; validated by the caller. */
export interface MemoryTableOptions {
  /** Most keys held at once (a set counts as one key). */
  maxEntries: number;
  /** Most bytes held at once, as {@link valueSize} and {@link memberSize} count them. */
  maxBytes: number;
  /** The clock, in epoch milliseconds. */
  now: () => number;
}

/** How often expired keys are dropped even if nobody reads them (they are invisible anyway). */
const SWEEP_INTERVAL_MS = 60_000;
/** Bytes counted per key beyond its characters (the Map slot, the entry object, its deadline). */
const KEY_OVERHEAD = 128;
/** Bytes counted per set member beyond its characters. */
const MEMBER_OVERHEAD = 48;

/** Bytes counted for a key holding `value`: V8 keeps strings at two bytes a character. */
export function valueSize(key: string, value: string): number {
  return KEY_OVERHEAD + 2 * (key.length + value.length);
}

/** Bytes counted for a key holding a set, its members included. */
export function setSize(key: string, members: Iterable<string>): number {
  let size = KEY_OVERHEAD + 2 * key.length;
  for (const member of members) size += memberSize(member);
  return size;
}

/** Bytes counted for one set member. */
export function memberSize(member: string): number {
  return MEMBER_OVERHEAD + 2 * member.length;
}

/**
 * The bounded table. Nothing here awaits, so a caller that reads and writes in one synchronous
 * step is atomic with respect to every other caller. The sweep runs on an unref'd timer, so an
 * idle table never keeps the process alive.
 */
export class MemoryTable {
  /** The keys; write through {@link put} and {@link drop}, which keep the byte count. */
  readonly entries = new Map<string, Entry>();
  /** The clock, in epoch milliseconds. */
  readonly now: () => number;
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  readonly #deadlines = new ExpiryHeap<Deadline>();
  readonly #sweeper: NodeJS.Timeout;
  #bytes = 0;
  #closed = false;

  constructor(options: MemoryTableOptions) {
    this.#maxEntries = options.maxEntries;
    this.#maxBytes = options.maxBytes;
    this.now = options.now;
    this.#sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.#sweeper.unref();
  }

  /** The check every store call starts with: an aborted signal rejects, a closed store is unavailable. */
  enter(signal: AbortSignal | undefined): void {
    signal?.throwIfAborted();
    if (this.#closed) throw new StoreUnavailableError('memory store is closed');
  }

  /** The live entry under `key`; an expired one is dropped on the way. */
  live(key: string): Entry | undefined {
    const entry = this.entries.get(key);
    if (entry !== undefined && entry.expiresAt <= this.now()) {
      this.drop(key);
      return undefined;
    }
    return entry;
  }

  /** The live value under `key`; a set there is a bug (Valkey answers WRONGTYPE). */
  liveValue(key: string): ValueEntry | undefined {
    const entry = this.live(key);
    if (entry?.kind === 'set') throw new TypeError('store key holds a set, not a value');
    return entry;
  }

  /** The live set under `key`; a value there is a bug (Valkey answers WRONGTYPE). */
  liveSet(key: string): SetEntry | undefined {
    const entry = this.live(key);
    if (entry?.kind === 'value') throw new TypeError('store key holds a value, not a set');
    return entry;
  }

  /** Removes a key and its bytes from the count. */
  drop(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.#bytes -= entry.size;
    this.entries.delete(key);
  }

  /** Stores `entry` under `key`, evicting others to make room; one larger than the whole bound is refused. */
  put(key: string, entry: Entry): void {
    if (entry.size > this.#maxBytes) {
      throw new StoreUnavailableError(`memory store: a value of ${entry.size} bytes is larger than the whole store (storage.memory.maxBytes)`);
    }
    // The old value's bytes are freed first, so an overwrite neither counts twice nor evicts itself.
    this.drop(key);
    this.#makeRoom(entry.size);
    this.entries.set(key, entry);
    this.#bytes += entry.size;
    this.#schedule(key, entry);
  }

  /** Removes `member` from the set `entry` in place, its bytes from the count; true when it was there. */
  removeMember(entry: SetEntry, member: string): boolean {
    if (!entry.members.delete(member)) return false;
    entry.size -= memberSize(member);
    this.#bytes -= memberSize(member);
    return true;
  }

  /** Drops every key whose deadline has passed. */
  sweep(): void {
    const t = this.now();
    for (let next = this.#deadlines.peek(); next !== undefined && next.at <= t; next = this.#deadlines.peek()) {
      this.#deadlines.pop();
      if (this.#isCurrent(next)) this.drop(next.key);
    }
  }

  /** Forgets everything and stops the sweep; {@link enter} fails from now on. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweeper);
    this.entries.clear();
    this.#bytes = 0;
    this.#deadlines.rebuild([]);
  }

  #schedule(key: string, entry: Entry): void {
    this.#deadlines.push({ at: entry.expiresAt, key, entry });
    // Overwrites leave stale deadlines behind; rebuild before they outnumber the live ones.
    if (this.#deadlines.size > 2 * this.entries.size + 1024) {
      this.#deadlines.rebuild([...this.entries].map(([k, e]) => ({ at: e.expiresAt, key: k, entry: e })));
    }
  }

  #isCurrent(deadline: Deadline): boolean {
    return this.entries.get(deadline.key) === deadline.entry && deadline.entry.expiresAt === deadline.at;
  }

  /** Room for one more key of `size` bytes. */
  #makeRoom(size: number): void {
    const full = () => this.entries.size >= this.#maxEntries || this.#bytes + size > this.#maxBytes;
    if (!full()) return;
    this.sweep();
    // Every live entry has a current deadline in the heap, so the heap runs out last.
    while (full()) {
      const next = this.#deadlines.pop();
      if (next === undefined) break;
      if (this.#isCurrent(next)) this.drop(next.key);
    }
  }
}
