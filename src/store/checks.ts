/**
 * Argument checks shared by every backend, so a bad call fails the same way on memory and on
 * Valkey instead of working in tests and breaking in production.
 */

/**
 * Throws a `TypeError` unless `ttlMs` is a positive integer number of milliseconds.
 * Nothing in the store may live forever, and a zero or negative TTL is almost always
 * a deadline computed from a clock that has already passed it: better loud than silently stored.
 */
export function assertTtl(ttlMs: number): void {
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) {
    throw new TypeError(`ttlMs must be a positive integer (milliseconds), got ${String(ttlMs)}`);
  }
}

/** Throws a `TypeError` unless `key` is a non-empty string. */
export function assertKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TypeError('store keys must be non-empty strings');
  }
}
