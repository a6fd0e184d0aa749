/**
 * `notifications/elicitation/complete` across replicas (MCP 2025-11-25 client/elicitation
 * "Completion Notifications for URL Mode Elicitation"). The upstream callback that finishes a
 * connection runs on whichever replica the user's browser reached; the agent's GET stream is held
 * by whichever replica its connection reached. The completing replica publishes the event on the
 * message bus; every replica (itself included) hands it to its own open streams of that MCP
 * session ({@link StreamRegistry}).
 *
 * Delivery is best effort, never lost silently. Each replica that wrote the event to at least one
 * stream leaves a delivery mark in the store; the publishing replica reads (takes) the mark once,
 * `confirmAfterMs` after publishing, and counts the event in
 * `mcpgate_elicitation_notifications_total` exactly once for the fleet:
 * - `delivered`: some replica wrote it to a stream of the session;
 * - `no_stream`: no replica had a stream for it (the agent holds none, holds it on a protocol
 *   version without the notification, or it arrived after the confirmation window);
 * - `failed`: the bus or the store could not be reached (also logged).
 * A flow started without an MCP session (a browser's `/connect/{name}`) has nobody to notify and
 * is not counted.
 *
 * Messages are sealed with the store's encryption key: they name sessions, and anything with
 * access to the Valkey server could otherwise read them off the channel.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../observability/logger.ts';
import type { Counter } from '../observability/metrics.ts';
import type { MessageBus } from '../store/bus.ts';
import type { Store } from '../store/port.ts';
import type { Sealer } from '../store/sealed.ts';
import type { ElicitationCompleted, StreamRegistry } from './stream-registry.ts';

/** The bus channel (the store's key prefix is prepended by the bus). */
export const ELICITATION_CHANNEL = 'events:elicitation-complete';

/** Options of {@link createElicitationEvents}. */
export interface ElicitationEventsOptions {
  bus: MessageBus;
  /** Where delivery marks are left; the store every replica shares. */
  store: Store;
  sealer: Sealer;
  /** This replica's open streams. */
  streams: StreamRegistry;
  /** `mcpgate_elicitation_notifications_total`, by `outcome`. */
  outcomes: Counter;
  logger: Logger;
  /** How long after publishing the delivery marks are read, in milliseconds. Default 2000. */
  confirmAfterMs?: number;
  /** Delay between two attempts to subscribe while the bus is unreachable, in milliseconds. Default 1000. */
  retryMs?: number;
}

/** The cross-replica notifier, as the composition root holds it. */
export interface ElicitationEvents {
  /** Subscribes this replica; resolves after the first attempt (success or not), and keeps trying in the background while the bus is unreachable. */
  start(): Promise<void>;
  /** True once this replica is subscribed (a readiness check). */
  readonly subscribed: boolean;
  /** Publishes a completed connection. Never rejects: a notification is a courtesy, its failure is counted and logged. */
  completed(event: ElicitationCompleted): Promise<void>;
  /** Settles pending confirmations now and unsubscribes. */
  close(): Promise<void>;
}

interface Published extends ElicitationCompleted {
  /** Names the delivery mark of this publication. */
  id: string;
}

const MARK_TTL_MS = 60_000;

/** Builds the notifier; call `start()` before serving. */
export function createElicitationEvents(options: ElicitationEventsOptions): ElicitationEvents {
  const { bus, store, sealer, streams, outcomes, logger } = options;
  const confirmAfterMs = options.confirmAfterMs ?? 2000;
  const retryMs = options.retryMs ?? 1000;
  if (!Number.isSafeInteger(confirmAfterMs) || confirmAfterMs <= 0) throw new TypeError('confirmAfterMs must be a positive integer');
  if (!Number.isSafeInteger(retryMs) || retryMs <= 0) throw new TypeError('retryMs must be a positive integer');
  let unsubscribe: (() => void) | undefined;
  let closed = false;
  /** Ends the wait between two subscription attempts (at close). */
  let wake: (() => void) | undefined;
  /** Confirmations not yet read, each runnable early (at close). */
  const pending = new Map<NodeJS.Timeout, () => Promise<void>>();
  const markKey = (id: string) => `events:elicitation-delivered:${id}`;

  /** One subscription attempt; true when subscribed. */
  async function attempt(): Promise<boolean> {
    try {
      const done = await bus.subscribe(ELICITATION_CHANNEL, receive);
      if (closed) done();
      else unsubscribe = done;
      return true;
    } catch (error) {
      logger.warn({ msg: 'cannot subscribe to elicitation events yet; retrying', err: (error as Error).message });
      return false;
    }
  }

  /** Runs on every replica, the publisher included. */
  function receive(message: string): void {
    let event: Published;
    try {
      event = JSON.parse(sealer.open(ELICITATION_CHANNEL, message)) as Published;
    } catch (error) {
      logger.warn({ msg: 'elicitation event dropped: it does not open with our keys', err: (error as Error).message });
      return;
    }
    if (streams.notifyElicitationComplete(event) === 0) return;
    store.set(markKey(event.id), '1', MARK_TTL_MS).catch((error: unknown) => {
      logger.warn({ msg: 'elicitation event delivered, but its delivery mark could not be stored', err: (error as Error).message });
    });
  }

  async function confirm(id: string, upstream: string): Promise<void> {
    try {
      const delivered = (await store.take(markKey(id))) !== undefined;
      outcomes.inc({ outcome: delivered ? 'delivered' : 'no_stream' });
      if (!delivered) logger.info({ msg: 'elicitation/complete reached no stream', upstream });
    } catch (error) {
      outcomes.inc({ outcome: 'failed' });
      logger.warn({ msg: 'elicitation/complete: its delivery could not be confirmed', upstream, err: (error as Error).message });
    }
  }

  return {
    async start() {
      if (await attempt()) return;
      // The bus is unreachable (Valkey down at start-up): keep trying in the background; /readyz says so meanwhile.
      void (async () => {
        while (!closed && !unsubscribe) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, retryMs);
            wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          if (!closed) await attempt();
        }
      })();
    },
    get subscribed() {
      return unsubscribe !== undefined && !closed;
    },
    async completed(event) {
      if (!event.mcpSessionId || closed) return;
      const id = randomBytes(16).toString('base64url');
      const { upstream, mcpSessionId, sessionId, elicitationId } = event;
      let receivers: number;
      try {
        receivers = await bus.publish(ELICITATION_CHANNEL, sealer.seal(ELICITATION_CHANNEL, JSON.stringify({ id, upstream, mcpSessionId, sessionId, elicitationId } satisfies Published)));
      } catch (error) {
        outcomes.inc({ outcome: 'failed' });
        logger.warn({ msg: 'elicitation/complete could not be published', upstream, err: (error as Error).message });
        return;
      }
      if (receivers === 0) {
        // Not even this replica is subscribed (the bus was down when it started): nobody heard it.
        outcomes.inc({ outcome: 'no_stream' });
        logger.warn({ msg: 'elicitation/complete had no subscriber on any replica', upstream });
        return;
      }
      const run = () => confirm(id, upstream);
      const timer = setTimeout(() => {
        pending.delete(timer);
        void run();
      }, confirmAfterMs);
      timer.unref();
      pending.set(timer, run);
    },
    async close() {
      if (closed) return;
      closed = true;
      wake?.();
      const runs = [...pending.entries()];
      pending.clear();
      for (const [timer] of runs) clearTimeout(timer);
      await Promise.all(runs.map(([, run]) => run()));
      unsubscribe?.();
    },
  };
}
