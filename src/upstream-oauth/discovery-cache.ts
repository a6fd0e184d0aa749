/**
 * A small in-process cache for discovery results (discovery is cached).
 *
 * Concurrent lookups of the same key share one request; successes live for `ttlMs`,
 * failures only for `failureTtlMs`, so a transient outage of an authorization server is
 * not remembered for long but a retry storm from many agents does not hammer it either.
 */

/** Options of {@link createDiscoveryCache}. */
export interface DiscoveryCacheOptions {
  /** How long a success is reused, in milliseconds. */
  ttlMs: number;
  /** How long a failure is reused, in milliseconds (0: not at all). */
  failureTtlMs: number;
  /** Entries kept at most; the oldest is dropped first. */
  maxEntries: number;
  /** The clock, in milliseconds. */
  now: () => number;
}

/** Returns the cached (or in-flight) result for `key`, or starts `load` and caches its outcome. */
export type DiscoveryCache = <T>(key: string, load: () => Promise<T>) => Promise<T>;

/** Creates a cache; see {@link DiscoveryCacheOptions}. */
export function createDiscoveryCache(options: DiscoveryCacheOptions): DiscoveryCache {
  const entries = new Map<string, { expires: number; promise: Promise<unknown> }>();

  return <T>(key: string, load: () => Promise<T>): Promise<T> => {
    const hit = entries.get(key);
    if (hit && hit.expires > options.now()) return hit.promise as Promise<T>;
    entries.delete(key);
    if (entries.size >= options.maxEntries) {
      const oldest = entries.keys().next();
      if (!oldest.done) entries.delete(oldest.value);
    }
    const promise = load();
    // In flight: every caller shares it (the fetcher's time limit guarantees it settles).
    const entry = { expires: Number.POSITIVE_INFINITY, promise };
    entries.set(key, entry);
    promise.then(
      () => {
        entry.expires = options.now() + options.ttlMs;
      },
      () => {
        entry.expires = options.now() + options.failureTtlMs;
      },
    );
    return promise;
  };
}
