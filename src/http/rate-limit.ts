/**
 * Rate limits: fixed-window counters kept in the storage port, so every replica shares them once
 * the store is Valkey. One per client address ({@link createRateLimiter}) and one for all clients
 * together ({@link createGlobalLimiter}); `route-limits.ts` puts both in front of every route that
 * answers unauthenticated requests with work.
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

  return { hit, enforce: enforcer(hit) };
}

/** Options of {@link createGlobalLimiter}; checked when it is called. */
export interface GlobalLimiterOptions {
  store: Store;
  /** Names the limit in store keys (`ratelimit-global:{name}:…`). */
  name: string;
  /** Requests allowed per window, from every client together. */
  limit: number;
  /** Window length in milliseconds. */
  windowMs: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
}

/**
 * Compare-and-set rounds a request may lose to concurrent ones before it is refused: each round
 * some contender wins, so a burst of up to this many concurrent requests is counted exactly.
 */
const GLOBAL_CAS_ROUNDS = 32;

/**
 * Creates a fixed-window limiter for all clients together (the `key` of `hit` is ignored): it
 * bounds what a distributed flood can make the gateway do for one route (fetches, IdP calls,
 * store writes), whoever sends it. A counter, not a set: a global limit is large, and the set
 * of {@link createRateLimiter} would be read whole on every request. Below the limit a request
 * costs a read and a compare-and-set; at the limit a read only. A request that keeps losing the
 * compare-and-set to concurrent ones (a burst larger than the store can serialise) is refused
 * rather than admitted uncounted.
 * @throws TypeError for a non-positive `limit` or `windowMs`.
 */
export function createGlobalLimiter(options: GlobalLimiterOptions): RateLimiter {
  const { store, name, limit, windowMs } = options;
  if (!Number.isSafeInteger(limit) || limit <= 0) throw new TypeError('limit must be a positive integer');
  if (!Number.isSafeInteger(windowMs) || windowMs <= 0) throw new TypeError('windowMs must be a positive integer (milliseconds)');
  if (!/^[a-z0-9_-]+$/.test(name)) throw new TypeError('name must be lowercase letters, digits, "-" or "_"');
  const now = options.now ?? Date.now;

  async function hit(_key: string, signal?: AbortSignal): Promise<RateLimitDecision> {
    const at = now();
    const window = Math.floor(at / windowMs);
    const retryAfterSeconds = Math.max(1, Math.ceil(((window + 1) * windowMs - at) / 1000));
    const storeKey = `ratelimit-global:${name}:${window}`;
    for (let round = 0; round < GLOBAL_CAS_ROUNDS; round++) {
      const current = await store.get(storeKey, signal);
      const count = current === undefined ? 0 : Number(current);
      if (!(count < limit)) break;
      if (await store.compareAndSet(storeKey, current, String(count + 1), windowMs + 1000, signal)) {
        return { allowed: true, remaining: limit - count - 1, retryAfterSeconds };
      }
    }
    return { allowed: false, remaining: 0, retryAfterSeconds };
  }
  return { hit, enforce: enforcer(hit) };
}

/**
 * Both limits of one route: the client's own (`perIp`), then everyone's (`global`). A client over
 * its own limit is refused before it is counted globally, so one client alone cannot use up the
 * global budget of the others.
 */
export function combineLimiters(perIp: RateLimiter, global: RateLimiter): RateLimiter {
  async function hit(key: string, signal?: AbortSignal): Promise<RateLimitDecision> {
    const own = await perIp.hit(key, signal);
    if (!own.allowed) return own;
    const all = await global.hit(key, signal);
    return all.allowed ? { ...all, remaining: Math.min(own.remaining, all.remaining) } : all;
  }
  return { hit, enforce: enforcer(hit) };
}

function enforcer(hit: RateLimiter['hit']): RateLimiter['enforce'] {
  return async (key, signal) => {
    const decision = await hit(key, signal);
    if (!decision.allowed) {
      throw new TooManyRequests('too many requests, retry later', { headers: { 'retry-after': String(decision.retryAfterSeconds) } });
    }
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
