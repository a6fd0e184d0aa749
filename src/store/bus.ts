/**
 * The message bus: how one replica tells the others about an event (an upstream connection
 * completed, so the agent's stream, wherever it is held, hears `notifications/elicitation/complete`).
 *
 * A separate port from the storage port: a store keeps values, a bus moves messages that nobody
 * keeps. Delivery is at most once and only to subscribers connected when the message is sent
 * (Valkey pub/sub semantics); callers that must know whether an event reached anyone confirm it
 * through the store (see `gateway/elicitation-events.ts`).
 *
 * Backends: {@link createMemoryBus} (one process: memory storage) and `createValkeyBus`
 * (`valkey_bus.ts`: every replica sharing a Valkey).
 */
import { assertKey } from './checks.ts';

/** A message handler; it runs on the subscriber's replica and must not throw (errors are reported, then dropped). */
export type MessageHandler = (message: string) => void;

/** Publish/subscribe across replicas. */
export interface MessageBus {
  /**
   * Sends `message` to every current subscriber of `channel`, on every replica. Resolves with the
   * number of subscriptions that received it (Valkey counts subscriber connections: one per
   * replica). Rejects with `StoreUnavailableError` when the bus cannot be reached.
   */
  publish(channel: string, message: string, signal?: AbortSignal): Promise<number>;
  /**
   * Calls `handler` for every message published on `channel` from now on. Resolves, once the
   * subscription is active, with the function that ends it. The subscription survives a lost
   * connection: it is renewed when the connection comes back (messages sent meanwhile are lost).
   */
  subscribe(channel: string, handler: MessageHandler): Promise<() => void>;
  /** Ends every subscription and releases the connections. */
  close(): Promise<void>;
}

/** A bus within one process (memory storage: a single replica). Handlers run synchronously in `publish`. */
export function createMemoryBus(options: { onHandlerError?: (error: unknown) => void } = {}): MessageBus {
  const channels = new Map<string, Set<MessageHandler>>();
  return {
    async publish(channel, message, signal) {
      assertKey(channel);
      signal?.throwIfAborted();
      const handlers = channels.get(channel);
      if (!handlers) return 0;
      for (const handler of [...handlers]) {
        try {
          handler(message);
        } catch (error) {
          options.onHandlerError?.(error);
        }
      }
      return handlers.size;
    },
    async subscribe(channel, handler) {
      assertKey(channel);
      let handlers = channels.get(channel);
      if (!handlers) channels.set(channel, (handlers = new Set()));
      // One entry per subscription, even for the same function.
      const entry: MessageHandler = (message) => handler(message);
      handlers.add(entry);
      return () => {
        handlers.delete(entry);
        if (handlers.size === 0 && channels.get(channel) === handlers) channels.delete(channel);
      };
    },
    async close() {
      channels.clear();
    },
  };
}
