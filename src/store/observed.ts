/**
 * A store that reports its failed operations (the store latency and error metrics), wrapped
 * around any backend by the composition root. Counted here, at the port, rather than where a
 * `StoreUnavailableError` becomes a 503: many failures never reach that mapping (an HTML page of
 * the login, a JSON-RPC error of the gateway path, `/readyz`, a clean-up after logout), and one
 * request may fail several operations.
 *
 * Only outages are reported (`StoreUnavailableError`); a `TypeError` (a bug) or an aborted signal
 * is passed on untouched. The error itself always propagates: observing never changes an answer.
 */
import { StoreUnavailableError, type Store } from './port.ts';

/** The store operations, as reported (`get`, `set`, …, `ping`). */
export type StoreOperation = Exclude<keyof Store, 'close'>;

/** Wraps `store`; `onFailure` is called once per failed operation, with the operation's name (never a key or a value). */
export function observeStoreFailures(store: Store, onFailure: (operation: StoreOperation) => void): Store {
  if (typeof onFailure !== 'function') throw new TypeError('observeStoreFailures: onFailure must be a function');
  function observed<T>(operation: StoreOperation, pending: Promise<T>): Promise<T> {
    return pending.catch((error: unknown) => {
      if (error instanceof StoreUnavailableError) onFailure(operation);
      throw error;
    });
  }
  return {
    get: (key, signal) => observed('get', store.get(key, signal)),
    set: (key, value, ttlMs, signal) => observed('set', store.set(key, value, ttlMs, signal)),
    setIfAbsent: (key, value, ttlMs, signal) => observed('setIfAbsent', store.setIfAbsent(key, value, ttlMs, signal)),
    take: (key, signal) => observed('take', store.take(key, signal)),
    delete: (keys, signal) => observed('delete', store.delete(keys, signal)),
    compareAndSet: (key, expected, value, ttlMs, signal) => observed('compareAndSet', store.compareAndSet(key, expected, value, ttlMs, signal)),
    deleteIfEquals: (key, expected, signal) => observed('deleteIfEquals', store.deleteIfEquals(key, expected, signal)),
    addMembers: (key, members, ttlMs, signal) => observed('addMembers', store.addMembers(key, members, ttlMs, signal)),
    removeMembers: (key, members, signal) => observed('removeMembers', store.removeMembers(key, members, signal)),
    members: (key, signal) => observed('members', store.members(key, signal)),
    ping: (signal) => observed('ping', store.ping(signal)),
    close: () => store.close(),
  };
}
