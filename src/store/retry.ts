/**
 * Retrying a write that must not be lost. After an authorization server rotated a refresh token,
 * the new token set exists nowhere but in this process: if saving it fails and the request just
 * answers 503, the next refresh presents the retired token, which the server takes for a replay
 * and answers by revoking the grant. A brief store hiccup (a failover, a reconnect) is worth a
 * few short retries before giving up.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { StoreUnavailableError } from './port.ts';

/** Options of {@link retryOnOutage}. */
export interface RetryOptions {
  /** Attempts in all, the first included. Default 4. */
  attempts?: number;
  /** Pause before the second attempt, in milliseconds; doubled before each next one. Default 100. */
  pauseMs?: number;
}

/**
 * Runs `write`, again after a growing pause each time it fails with `StoreUnavailableError`,
 * up to `attempts` times; any other error (a bug, a lost compare-and-set) is thrown at once.
 * The last outage is thrown when every attempt failed. `write` must be safe to repeat: a timed
 * out store command may have run anyway (compare-and-set writes are, and say so by returning false).
 */
export async function retryOnOutage<T>(write: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = options.attempts ?? 4;
  let pause = options.pauseMs ?? 100;
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (error) {
      if (!(error instanceof StoreUnavailableError) || attempt >= attempts) throw error;
      await sleep(pause);
      pause *= 2;
    }
  }
}
