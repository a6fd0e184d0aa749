/**
 * The tokens mode `token_exchange` obtained, kept in process memory until shortly before they
 * expire. Bounded: past `maxEntries` the entry stored longest ago is dropped first (a Map keeps
 * insertion order, and a renewed entry is inserted again).
 */

/** Options of {@link createExchangedTokenCache}; checked when it is called. */
export interface ExchangedTokenCacheOptions {
  /** The clock, epoch milliseconds. */
  now: () => number;
  /** Exchange again this long before a token expires, ms; never more than half its lifetime. */
  expiryMarginMs: number;
  /** Lifetime assumed when the response has no `expires_in`, ms. */
  defaultLifetimeMs: number;
  /** Tokens kept at most. */
  maxEntries: number;
}

/** One exchanged token. */
export interface CachedExchange {
  accessToken: string;
  /** When to exchange again (expiry minus margin), epoch ms. */
  renewAt: number;
}

/** The bounded cache of exchanged tokens, by the caller's key. */
export interface ExchangedTokenCache {
  /** The entry of `key` while it need not be renewed; one past its `renewAt` is dropped. */
  get(key: string): CachedExchange | undefined;
  /** Keeps a token just issued with `expiresIn` seconds to live (the default lifetime when absent). */
  remember(key: string, accessToken: string, expiresIn: number | undefined): CachedExchange;
  /** Drops the entry of `key` if it still holds `accessToken` (one a later exchange replaced stays). */
  dropIf(key: string, accessToken: string): void;
}

/**
 * Creates an empty cache.
 * @throws TypeError for a negative or non-finite duration, or a `maxEntries` that is not a positive integer.
 */
export function createExchangedTokenCache(options: ExchangedTokenCacheOptions): ExchangedTokenCache {
  const { now, maxEntries } = options;
  const expiryMargin = nonNegative(options.expiryMarginMs, 'expiryMarginMs');
  const defaultLifetime = nonNegative(options.defaultLifetimeMs, 'defaultLifetimeMs');
  if (!Number.isSafeInteger(maxEntries) || maxEntries <= 0) throw new TypeError('maxEntries must be a positive integer');
  const entries = new Map<string, CachedExchange>();
  return {
    get(key) {
      const entry = entries.get(key);
      if (entry && entry.renewAt > now()) return entry;
      if (entry) entries.delete(key);
      return undefined;
    },
    remember(key, accessToken, expiresIn) {
      const lifetime = expiresIn !== undefined ? expiresIn * 1000 : defaultLifetime;
      const entry = { accessToken, renewAt: now() + lifetime - Math.min(expiryMargin, lifetime / 2) };
      entries.delete(key);
      entries.set(key, entry);
      while (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
      return entry;
    },
    dropIf(key, accessToken) {
      if (entries.get(key)?.accessToken === accessToken) entries.delete(key);
    },
  };
}

/** `value` when it is a finite non-negative number of milliseconds. */
export function nonNegative(value: number, name: string): number {
  if (!Number.isFinite(value) || value < 0) throw new TypeError(`${name} must be a non-negative number of milliseconds`);
  return value;
}
