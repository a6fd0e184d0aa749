/**
 * Per-client rate limits (DESIGN §8: `/oauth/register`, `/oauth/token`, callbacks): a fixed-window
 * counter kept in the storage port, so every replica shares it once the store is Valkey.
 */
import { isIP } from 'node:net';
import type { Store } from '../store/port.ts';
import { TooManyRequests } from './errors.ts';

/** Options of {@link createRateLimiter}; checked when it is called. */
export interface RateLimiterOptions {
  store: Store;
  /** Names the limit in store keys (`ratelimit:{name}:…`): one name per limited endpoint. */
  name: string;
  /** Requests allowed per window and key. */
  limit: number;
  /** Window length in milliseconds. */
  windowMs: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
}

/** The answer for one request. */
export interface RateLimitDecision {
  allowed: boolean;
  /** Requests left in this window after this one. */
  remaining: number;
  /** Seconds until the window resets (for `Retry-After`), at least 1. */
  retryAfterSeconds: number;
}

export interface RateLimiter {
  /** Counts one request for `key` (usually the client IP). Throws `StoreUnavailableError` when the store fails. */
  hit(key: string, signal?: AbortSignal): Promise<RateLimitDecision>;
  /** Like `hit`, but throws `TooManyRequests` (429 with `Retry-After`) when the limit is reached. */
  enforce(key: string, signal?: AbortSignal): Promise<void>;
}

/** Compare-and-set attempts before a contended counter counts as "over the limit". */
const CAS_ATTEMPTS = 8;

/**
 * Creates a fixed-window limiter. The counter for a window lives in the store under
 * `ratelimit:{name}:{window}:{key}` and expires with the window. Increments use the port's
 * compare-and-set; if other replicas keep winning the race, the request is refused rather than
 * let through uncounted (heavy contention on one key *is* the flood being limited).
 * @throws TypeError for a non-positive `limit` or `windowMs`.
 */
export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const { store, name, limit, windowMs } = options;
  if (!Number.isSafeInteger(limit) || limit <= 0) throw new TypeError('limit must be a positive integer');
  if (!Number.isSafeInteger(windowMs) || windowMs <= 0) throw new TypeError('windowMs must be a positive integer (milliseconds)');
  if (!/^[a-z0-9_-]+$/.test(name)) throw new TypeError('name must be lowercase letters, digits, "-" or "_"');
  const now = options.now ?? Date.now;

  async function hit(key: string, signal?: AbortSignal): Promise<RateLimitDecision> {
    const at = now();
    const window = Math.floor(at / windowMs);
    const retryAfterSeconds = Math.max(1, Math.ceil(((window + 1) * windowMs - at) / 1000));
    const storeKey = `ratelimit:${name}:${window}:${limitKey(key)}`;
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const current = await store.get(storeKey, signal);
      const count = current === undefined ? 0 : Number(current);
      if (count >= limit) return { allowed: false, remaining: 0, retryAfterSeconds };
      // The key outlives its window by a little, never by more than one window.
      if (await store.compareAndSet(storeKey, current, String(count + 1), windowMs + 1000, signal)) {
        return { allowed: true, remaining: limit - count - 1, retryAfterSeconds };
      }
    }
    return { allowed: false, remaining: 0, retryAfterSeconds };
  }

  return {
    hit,
    async enforce(key, signal) {
      const decision = await hit(key, signal);
      if (!decision.allowed) {
        throw new TooManyRequests('too many requests, retry later', { headers: { 'retry-after': String(decision.retryAfterSeconds) } });
      }
    },
  };
}

/**
 * The key a client is counted under: an IPv6 client is counted per /64, because one host
 * usually holds a whole /64 and would otherwise get a fresh limit per address.
 */
export function limitKey(address: string): string {
  const plain = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
  if (isIP(plain) !== 6) return plain;
  return expandIpv6(plain).slice(0, 4).join(':') + '::/64';
}

function expandIpv6(address: string): string[] {
  const [head = '', tail] = address.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const missing = tail === undefined ? 0 : 8 - left.length - right.length;
  return [...left, ...Array<string>(missing).fill('0'), ...right].map((part) => part.toLowerCase().replace(/^0+(?=.)/, ''));
}
