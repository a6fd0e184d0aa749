/**
 * One task per key in flight, for operations that consume a one-time value: a refresh with a
 * rotating refresh token, a dynamic client registration. Two runs of such a task with the same
 * input would spend the value twice, and an authorization server that rotates refresh tokens
 * (OAuth 2.1 §4.3.1) treats the second use as a replay and revokes the whole grant.
 *
 * Callers write their task so that it is safe to run again right after another run finished:
 * it re-reads the store first and only acts when the stored result is still stale. The single
 * flight then only has to make the runs one after the other, never side by side.
 *
 * - {@link createSingleFlight}: one process (memory storage).
 * - {@link createFleetSingleFlight}: every replica sharing one Valkey.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { TemporarilyUnavailable } from '../http/errors.ts';
import type { Store } from '../store/port.ts';

/**
 * Runs `task` for `key` unless a run for the same key is in flight, in which case the caller
 * waits for it. Errors are shared like results. Keys are plain strings (`refresh:idp:<sid>`).
 */
export type SingleFlight = <T>(key: string, task: () => Promise<T>) => Promise<T>;

/**
 * The in-process single flight: callers that ask while a task runs share its promise; the key is
 * free again as soon as the task settles. Enough when the process is the only one (memory storage).
 */
export function createSingleFlight(): SingleFlight {
  const inFlight = new Map<string, Promise<unknown>>();
  return <T>(key: string, task: () => Promise<T>): Promise<T> => {
    const running = inFlight.get(key);
    if (running) return running as Promise<T>;
    const started = (async () => {
      try {
        return await task();
      } finally {
        inFlight.delete(key);
      }
    })();
    inFlight.set(key, started);
    return started;
  };
}

/** Options of {@link createFleetSingleFlight}; validated when it is called. */
export interface FleetSingleFlightOptions {
  /** The store every replica shares (Valkey). */
  store: Store;
  /**
   * How long a lock lives when its holder never releases it (the holder crashed), in
   * milliseconds. Must exceed the longest task: a refresh waits up to 10 s for the IdP (its
   * request timeout) and 5 s for an upstream token endpoint, plus a few store writes. Default
   * 20000. A holder that outlives its lock is not fatal: the next run re-reads the store.
   */
  lockTtlMs?: number;
  /**
   * How long a caller waits for another replica's lock before giving up with a 503
   * (`TemporarilyUnavailable`, `Retry-After`), in milliseconds. Default 12000: longer than one
   * IdP request, shorter than the lock TTL so an agent is not held for a crashed holder's whole TTL.
   */
  waitMs?: number;
  /** First pause between two attempts at a held lock, in milliseconds; doubled up to `maxPollMs`. Default 10. */
  pollMs?: number;
  /** Longest pause between two attempts, in milliseconds. Default 200. */
  maxPollMs?: number;
}

/** The lock's store key for a single-flight key. */
export function lockKey(key: string): string {
  return `lock:${key}`;
}

/**
 * The single flight of several replicas: in-process sharing first (one caller per process goes
 * on), then a short lock in the store, `lock:<key>`, taken with `setIfAbsent` (SET NX PX) under a
 * random owner token and released with `deleteIfEquals` (only by its owner: a holder whose lock
 * expired must not release the next holder's).
 *
 * The holder runs the task; callers on other replicas poll (short, growing pauses) until the
 * lock is free, then take it and run the task themselves, and the task, re-reading the store,
 * finds the holder's result there instead of consuming the one-time value again. A lock that
 * stays held past `waitMs` (its holder is slow, or crashed and the TTL has not run out yet)
 * answers 503 with `Retry-After`; a crashed holder's lock expires on its own after `lockTtlMs`.
 * A store outage while taking the lock rejects with `StoreUnavailableError` (503 as well).
 */
export function createFleetSingleFlight(options: FleetSingleFlightOptions): SingleFlight {
  const { store } = options;
  const lockTtlMs = positiveMs(options.lockTtlMs ?? 20_000, 'lockTtlMs');
  const waitMs = positiveMs(options.waitMs ?? 12_000, 'waitMs');
  const pollMs = positiveMs(options.pollMs ?? 10, 'pollMs');
  const maxPollMs = positiveMs(options.maxPollMs ?? 200, 'maxPollMs');
  if (typeof store?.setIfAbsent !== 'function' || typeof store.deleteIfEquals !== 'function') {
    throw new TypeError('fleet single flight: a store is required');
  }
  // Past the wait, a crashed holder's lock is gone at the latest after what is left of its TTL.
  const retryAfter = String(Math.max(1, Math.ceil((lockTtlMs - Math.min(waitMs, lockTtlMs)) / 1000)));
  const inProcess = createSingleFlight();

  async function acquire(key: string): Promise<string> {
    const owner = randomBytes(18).toString('base64url');
    const deadline = performance.now() + waitMs;
    for (let pause = pollMs; ; pause = Math.min(pause * 2, maxPollMs)) {
      if (await store.setIfAbsent(lockKey(key), owner, lockTtlMs)) return owner;
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new TemporarilyUnavailable('another replica is renewing the same credential; retry shortly', { headers: { 'retry-after': retryAfter } });
      }
      await sleep(Math.min(pause, left));
    }
  }

  return <T>(key: string, task: () => Promise<T>): Promise<T> =>
    inProcess(key, async () => {
      const owner = await acquire(key);
      try {
        return await task();
      } finally {
        // A failed release is not the task's failure: the lock then expires after its TTL.
        await store.deleteIfEquals(lockKey(key), owner).catch(() => undefined);
      }
    });
}

function positiveMs(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`fleet single flight: ${name} must be a positive integer of milliseconds`);
  return value;
}
