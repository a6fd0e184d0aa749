/**
 * One task per key in flight: callers that ask while it runs share its promise (DESIGN §5.2,
 * "one refresh per session in flight"). Errors are shared too; the key is free again as soon as
 * the task settles.
 *
 * This is the seam for the multi-replica version: a `SingleFlight` that also takes a short
 * Valkey lock (`setIfAbsent` on `lock:refresh:{sid}`) around `task`, and makes the losers on other
 * replicas wait for the winner's result in the store (the successor-token cache of DESIGN §5.2)
 * instead of replaying a refresh token the winner has already consumed. Callers need not change:
 * they always re-read the store inside `task` before refreshing.
 */
export type SingleFlight = <T>(key: string, task: () => Promise<T>) => Promise<T>;

/** The in-process single flight: a Map of promises. */
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
