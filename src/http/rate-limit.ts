/**
 * Per-client rate limits (`/oauth/register`, `/oauth/token`, callbacks): a fixed-window
 * counter kept in the storage port, so every replica shares it once the store is Valkey.
 */
import { randomBytes } from 'node:crypto';
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

/**
 * Creates a fixed-window limiter. Each request adds a member to the set
 * `ratelimit:{name}:{window}:{key}`, which expires with the window. Members sort by arrival
 * (time, then a per-process sequence, then a random tail), and a request is admitted when its
 * own member is among the first `limit`: set additions never conflict, so a burst from one client
 * on several replicas needs no compare-and-set retries and admits exactly `limit` (give or take
 * the clock skew between replicas at the boundary). The size is checked before adding, so a flood
 * cannot grow the set much beyond the limit.
 * @throws TypeError for a non-positive `limit` or `windowMs`.
 */
export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const { store, name, limit, windowMs } = options;
  if (!Number.isSafeInteger(limit) || limit <= 0) throw new TypeError('limit must be a positive integer');
  if (!Number.isSafeInteger(windowMs) || windowMs <= 0) throw new TypeError('windowMs must be a positive integer (milliseconds)');
  if (!/^[a-z0-9_-]+$/.test(name)) throw new TypeError('name must be lowercase letters, digits, "-" or "_"');
  const now = options.now ?? Date.now;
  let sequence = 0;

  async function hit(key: string, signal?: AbortSignal): Promise<RateLimitDecision> {
    const at = now();
    const window = Math.floor(at / windowMs);
    const retryAfterSeconds = Math.max(1, Math.ceil(((window + 1) * windowMs - at) / 1000));
    const storeKey = `ratelimit:${name}:${window}:${limitKey(key)}`;
    const refused = { allowed: false, remaining: 0, retryAfterSeconds };
    if ((await store.members(storeKey, signal)).length >= limit) return refused;
    sequence = (sequence + 1) % 1e9;
    const member = `${String(at).padStart(15, '0')}.${String(sequence).padStart(9, '0')}.${randomBytes(6).toString('base64url')}`;
    // The key outlives its window by a little, never by more than one window.
    await store.addMembers(storeKey, [member], windowMs + 1000, signal);
    const members = (await store.members(storeKey, signal)).sort();
    const rank = members.indexOf(member);
    return rank < 0 || rank >= limit ? refused : { allowed: true, remaining: Math.max(0, limit - members.length), retryAfterSeconds };
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
