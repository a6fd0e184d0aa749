/**
 * The storage port: the few byte-level operations every backend offers.
 *
 * Values are opaque strings; encryption at rest, token families and indexes live above
 * the port (see `sealed.ts` and the domain stores), once, not once per backend.
 * Every method takes an AbortSignal and throws `StoreUnavailableError` on I/O failure:
 * an outage is never reported as "not found". An aborted signal rejects with its reason.
 * Bad arguments (an empty key, a TTL that is not a positive integer) reject with `TypeError`:
 * a bug, not an outage. A key holds either a value or a set; using it as the other is a bug too.
 * `test/store/contract.ts` is the executable form of this contract; every backend passes it.
 */
export interface Store {
  /** The value stored under `key`, or `undefined` when there is none (or it expired). */
  get(key: string, signal?: AbortSignal): Promise<string | undefined>;
  /** Stores `value` under `key` for `ttlMs` milliseconds (required: nothing lives forever). */
  set(key: string, value: string, ttlMs: number, signal?: AbortSignal): Promise<void>;
  /** Stores only when `key` is absent; true when it was stored (a lock, a single-use marker). */
  setIfAbsent(key: string, value: string, ttlMs: number, signal?: AbortSignal): Promise<boolean>;
  /** Atomically reads and deletes (GETDEL): at most one caller ever receives a given value. */
  take(key: string, signal?: AbortSignal): Promise<string | undefined>;
  /** Deletes the keys; missing keys are not an error. */
  delete(keys: string | string[], signal?: AbortSignal): Promise<void>;
  /**
   * Replaces the value only when the current one equals `expected` (`undefined`: only when absent).
   * True when the swap happened. The TTL is reset to `ttlMs`.
   */
  compareAndSet(key: string, expected: string | undefined, value: string, ttlMs: number, signal?: AbortSignal): Promise<boolean>;
  /**
   * Deletes `key` only when its value equals `expected`; true when it was deleted. The release of
   * a lock taken with `setIfAbsent` and an owner token: a holder whose lock expired and was taken
   * by another must not delete the new holder's lock.
   */
  deleteIfEquals(key: string, expected: string, signal?: AbortSignal): Promise<boolean>;
  /** Adds members to the set at `key` and extends the set's TTL to at least `ttlMs` (never shortens it). No members: no-op. */
  addMembers(key: string, members: string[], ttlMs: number, signal?: AbortSignal): Promise<void>;
  /** Removes members from the set at `key`; a set left empty no longer exists. */
  removeMembers(key: string, members: string[], signal?: AbortSignal): Promise<void>;
  /** The members of the set at `key` (empty when there is none). */
  members(key: string, signal?: AbortSignal): Promise<string[]>;
  /** Resolves when the backend answers; throws `StoreUnavailableError` when it does not (used by /readyz). */
  ping(signal?: AbortSignal): Promise<void>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}

/** Thrown by every store method when the backend cannot be reached or fails. Maps to 503. */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
