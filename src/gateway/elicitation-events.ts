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
  const notifier = resolveNotifier(options);
  return {
    async start() {
      if (await attempt(notifier)) return;
      // The bus is unreachable (Valkey down at start-up): keep trying in the background; /readyz says so meanwhile.
      void keepSubscribing(notifier);
    },
    get subscribed() {
      return notifier.unsubscribe !== undefined && !notifier.closed;
    },
    completed: (event) => publish(notifier, event),
    close: () => close(notifier),
  };
}

/** The checked options and the state of one notifier, which the steps below take as their first argument. */
interface Notifier extends Omit<ElicitationEventsOptions, 'confirmAfterMs' | 'retryMs'> {
  confirmAfterMs: number;
  retryMs: number;
  unsubscribe: (() => void) | undefined;
  closed: boolean;
  /** Ends the wait between two subscription attempts (at close). */
  wake: (() => void) | undefined;
  /** Confirmations not yet read, each runnable early (at close). */
  pending: Map<NodeJS.Timeout, () => Promise<void>>;
}

/** Checks the options and fills in the defaults. */
function resolveNotifier(options: ElicitationEventsOptions): Notifier {
  const confirmAfterMs = options.confirmAfterMs ?? 2000;
  const retryMs = options.retryMs ?? 1000;
  if (!Number.isSafeInteger(confirmAfterMs) || confirmAfterMs <= 0) throw new TypeError('confirmAfterMs must be a positive integer');
  if (!Number.isSafeInteger(retryMs) || retryMs <= 0) throw new TypeError('retryMs must be a positive integer');
  const { bus, store, sealer, streams, outcomes, logger } = options;
  return { bus, store, sealer, streams, outcomes, logger, confirmAfterMs, retryMs, unsubscribe: undefined, closed: false, wake: undefined, pending: new Map() };
}

const markKey = (id: string) => `events:elicitation-delivered:${id}`;

/** One subscription attempt; true when subscribed. */
async function attempt(notifier: Notifier): Promise<boolean> {
  try {
    const done = await notifier.bus.subscribe(ELICITATION_CHANNEL, (message) => receive(notifier, message));
    if (notifier.closed) done();
    else notifier.unsubscribe = done;
    return true;
  } catch (error) {
    notifier.logger.warn({ msg: 'cannot subscribe to elicitation events yet; retrying', err: (error as Error).message });
    return false;
  }
}

/** Attempts to subscribe every `retryMs` until one succeeds or the notifier is closed. */
async function keepSubscribing(notifier: Notifier): Promise<void> {
  while (!notifier.closed && !notifier.unsubscribe) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, notifier.retryMs);
      notifier.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    if (!notifier.closed) await attempt(notifier);
  }
}

/** Runs on every replica, the publisher included. */
function receive(notifier: Notifier, message: string): void {
  const { logger } = notifier;
  let event: Published;
  try {
    event = JSON.parse(notifier.sealer.open(ELICITATION_CHANNEL, message)) as Published;
  } catch (error) {
    logger.warn({ msg: 'elicitation event dropped: it does not open with our keys', err: (error as Error).message });
    return;
  }
  if (notifier.streams.notifyElicitationComplete(event) === 0) return;
  notifier.store.set(markKey(event.id), '1', MARK_TTL_MS).catch((error: unknown) => {
    logger.warn({ msg: 'elicitation event delivered, but its delivery mark could not be stored', err: (error as Error).message });
  });
}

/** Publishes `event`, then reads its delivery marks `confirmAfterMs` later ({@link confirm}). */
async function publish(notifier: Notifier, event: ElicitationCompleted): Promise<void> {
  const { outcomes, logger, pending } = notifier;
  if (!event.mcpSessionId || notifier.closed) return;
  const id = randomBytes(16).toString('base64url');
  const { upstream, mcpSessionId, sessionId, elicitationId } = event;
  let receivers: number;
  try {
    receivers = await notifier.bus.publish(ELICITATION_CHANNEL, notifier.sealer.seal(ELICITATION_CHANNEL, JSON.stringify({ id, upstream, mcpSessionId, sessionId, elicitationId } satisfies Published)));
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
  const run = () => confirm(notifier, id, upstream);
  const timer = setTimeout(() => {
    pending.delete(timer);
    void run();
  }, notifier.confirmAfterMs);
  timer.unref();
  pending.set(timer, run);
}

/** Takes the delivery mark of publication `id` and counts the outcome, once for the fleet. */
async function confirm(notifier: Notifier, id: string, upstream: string): Promise<void> {
  const { outcomes, logger } = notifier;
  try {
    const delivered = (await notifier.store.take(markKey(id))) !== undefined;
    outcomes.inc({ outcome: delivered ? 'delivered' : 'no_stream' });
    if (!delivered) logger.info({ msg: 'elicitation/complete reached no stream', upstream });
  } catch (error) {
    outcomes.inc({ outcome: 'failed' });
    logger.warn({ msg: 'elicitation/complete: its delivery could not be confirmed', upstream, err: (error as Error).message });
  }
}

async function close(notifier: Notifier): Promise<void> {
  if (notifier.closed) return;
  notifier.closed = true;
  notifier.wake?.();
  const runs = [...notifier.pending.entries()];
  notifier.pending.clear();
  for (const [timer] of runs) clearTimeout(timer);
  await Promise.all(runs.map(([, run]) => run()));
  notifier.unsubscribe?.();
}
