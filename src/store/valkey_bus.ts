/**
 * The message bus on Valkey pub/sub, for replicas that share a Valkey.
 *
 * Two connections of its own, besides the store's: a connection in subscriber mode accepts no
 * other command, and a publish must not wait behind the store's traffic either. The subscriber
 * connects when the first subscription is made; the publisher when the first message is sent.
 * Both reconnect for ever (the store's policy); after a reconnect the subscriber subscribes to its
 * channels again before it reports itself ready. Messages published while a replica's subscriber
 * is down are lost for that replica (pub/sub keeps nothing): callers confirm delivery through the store.
 */
import type { Redis } from 'iovalkey';
import { assertKey } from './checks.ts';
import type { MessageBus, MessageHandler } from './bus.ts';
import { createValkeyClient, type ValkeyClient, type ValkeyConnectionOptions } from './valkey_client.ts';
import { createValkeyCommandRunner, type RunValkeyCommand } from './valkey_command.ts';

/** Options of {@link createValkeyBus}: where Valkey is (as for the store) and the key prefix channels share. */
export interface ValkeyBusOptions extends Omit<ValkeyConnectionOptions, 'connectTimeoutMs' | 'commandTimeoutMs'> {
  /** Prepended to every channel name, as the store prepends it to keys. */
  keyPrefix: string;
  /** How long to wait for a TCP (and TLS) connection, in milliseconds. Default 5000. */
  connectTimeoutMs?: number;
  /** Upper bound on one publish or subscribe, in milliseconds, including waiting for the connection. Default 2000. */
  commandTimeoutMs?: number;
  /** Told about connection errors and failed re-subscriptions. */
  onError?: (error: Error) => void;
  /** Told about a handler that threw (the message is dropped for that handler only). */
  onHandlerError?: (error: unknown) => void;
}

/** One of the bus's two connections: the client and the runner that sends its commands under the deadline. */
interface BusConnection {
  readonly client: ValkeyClient;
  readonly run: RunValkeyCommand;
}

/** Creates the Valkey bus; options are checked here, connections opened on first use. */
export function createValkeyBus(options: ValkeyBusOptions): MessageBus {
  const { keyPrefix, connectTimeoutMs = 5000, commandTimeoutMs = 2000, onError, onHandlerError } = options;
  if (typeof keyPrefix !== 'string' || /[{}]/.test(keyPrefix)) throw new TypeError('valkey: keyPrefix must be a string without { or }');
  for (const [name, value] of [['connectTimeoutMs', connectTimeoutMs], ['commandTimeoutMs', commandTimeoutMs]] as const) {
    if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`valkey: ${name} must be a positive integer (milliseconds)`);
  }
  const connection: ValkeyConnectionOptions = { ...options, connectTimeoutMs, commandTimeoutMs };
  // Handlers by prefixed channel; the subscriber is subscribed to exactly these channels.
  const handlers = new Map<string, Set<MessageHandler>>();
  let publisher: BusConnection | undefined;
  let subscriber: BusConnection | undefined;
  let closed = false;

  /** The client with its command runner (each waits for its own connection). */
  function connect(client: ValkeyClient): BusConnection {
    const run = createValkeyCommandRunner({ client, commandTimeoutMs, isClosed: () => closed, closedMessage: 'valkey bus is closed' });
    return { client, run };
  }

  function openPublisher(): BusConnection {
    if (publisher) return publisher;
    publisher = connect(createValkeyClient(connection));
    publisher.client.on('error', (error: Error) => onError?.(error));
    return publisher;
  }

  function openSubscriber(): BusConnection {
    if (subscriber) return subscriber;
    const client = createValkeyClient(connection);
    subscriber = connect(client);
    client.on('error', (error: Error) => onError?.(error));
    client.on('message', (channel: string, message: string) => dispatch(handlers.get(channel), message, onHandlerError));
    // A cluster client renews its subscriptions itself when it picks another node.
    if (!client.isCluster) resubscribeAfterReconnect(client as Redis, handlers, onError);
    return subscriber;
  }

  return {
    async publish(channel, message, signal) {
      assertKey(channel);
      const { run } = openPublisher();
      return run('publish', signal, (client) => client.publish(keyPrefix + channel, message));
    },

    async subscribe(channel, handler) {
      assertKey(channel);
      const prefixed = keyPrefix + channel;
      const { client, run } = openSubscriber();
      let set = handlers.get(prefixed);
      const first = !set;
      if (!set) handlers.set(prefixed, (set = new Set()));
      const entry: MessageHandler = (message) => handler(message);
      set.add(entry);
      if (first) {
        try {
          await run('subscribe', undefined, (c) => c.subscribe(prefixed));
        } catch (error) {
          set.delete(entry);
          if (set.size === 0) handlers.delete(prefixed);
          throw error;
        }
      }
      return () => {
        set.delete(entry);
        if (set.size > 0 || handlers.get(prefixed) !== set) return;
        handlers.delete(prefixed);
        if (!closed && client.status === 'ready') client.unsubscribe(prefixed).catch(() => undefined);
      };
    },

    async close() {
      if (closed) return;
      closed = true;
      handlers.clear();
      await quitAll([publisher?.client, subscriber?.client].filter((c): c is ValkeyClient => c !== undefined), commandTimeoutMs);
    },
  };
}

/** Hands `message` to each of a channel's handlers; one that throws is reported and the others still run. */
function dispatch(handlers: ReadonlySet<MessageHandler> | undefined, message: string, onHandlerError: ((error: unknown) => void) | undefined): void {
  for (const handler of [...(handlers ?? [])]) {
    try {
      handler(message);
    } catch (error) {
      onHandlerError?.(error);
    }
  }
}

/**
 * Standalone and Sentinel: the bus subscribes again itself after a reconnect (to every channel
 * that has handlers), so a failure is reported instead of becoming an unhandled rejection inside
 * the client; a failed attempt drops the connection, and the fresh one tries again.
 */
function resubscribeAfterReconnect(client: Redis, handlers: ReadonlyMap<string, unknown>, onError: ((error: Error) => void) | undefined): void {
  client.options.autoResubscribe = false;
  let connectedBefore = false;
  client.on('ready', () => {
    if (connectedBefore && handlers.size > 0) {
      client.subscribe(...handlers.keys()).catch((error: unknown) => {
        onError?.(new Error(`valkey bus: subscribing again after a reconnect failed: ${(error as Error).message}`));
        // A fresh connection tries again.
        client.disconnect(true);
      });
    }
    connectedBefore = true;
  });
}

/** Closes the connections: QUIT lets replies already on their way arrive (for at most `timeoutMs`); disconnect() also stops reconnecting. */
async function quitAll(clients: ValkeyClient[], timeoutMs: number): Promise<void> {
  const timeout = new Promise((resolve) => setTimeout(resolve, timeoutMs).unref());
  await Promise.race([Promise.all(clients.map((c) => c.quit().catch(() => undefined))), timeout]);
  for (const c of clients) c.disconnect();
}
