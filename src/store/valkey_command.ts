/**
 * One Valkey command under a deadline, the way the store and the bus both send theirs: it waits
 * for the connection to become ready (never queued to run later), gives up after the command
 * timeout, honours the caller's AbortSignal, and reports every failure as `StoreUnavailableError`.
 */
import { StoreUnavailableError } from './port.ts';
import type { ValkeyClient } from './valkey_client.ts';

/**
 * Runs `command` on the connection. `op` names the operation in error messages
 * (`valkey get timed out after 2000 ms`); it never holds a key or a value.
 */
export type RunValkeyCommand = <T>(op: string, signal: AbortSignal | undefined, command: (client: ValkeyClient) => Promise<T>) => Promise<T>;

/** Options of {@link createValkeyCommandRunner}. */
export interface ValkeyCommandRunnerOptions {
  /** The connection every command goes to. */
  client: ValkeyClient;
  /** Upper bound on one call, in milliseconds, waiting for the connection included. */
  commandTimeoutMs: number;
  /** True once the owner was closed: a call then fails at once, without touching the connection. */
  isClosed: () => boolean;
  /** The message of that failure (`valkey store is closed`). */
  closedMessage: string;
}

/**
 * Creates the runner for one connection.
 *
 * A call rejects with the signal's reason when `signal` aborts, and with `StoreUnavailableError`
 * on a timeout (`valkey {op} timed out after {ms} ms`), an error reply or a lost connection
 * (`valkey {op} failed: {reason}`, the cause attached). A timeout or abort after the command was
 * sent cannot recall it: it may still have run, so callers must treat the outcome as unknown.
 */
export function createValkeyCommandRunner(options: ValkeyCommandRunnerOptions): RunValkeyCommand {
  const { client, commandTimeoutMs, isClosed, closedMessage } = options;
  let nextReady: Promise<void> | undefined;

  /** Resolves when the connection is usable; one shared listener however many calls wait. */
  function whenReady(): Promise<void> | undefined {
    if (client.status === 'ready') return undefined;
    nextReady ??= new Promise<void>((resolve) => {
      client.once('ready', () => {
        nextReady = undefined;
        resolve();
      });
    });
    return nextReady;
  }

  return function run<T>(op: string, signal: AbortSignal | undefined, command: (c: ValkeyClient) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      signal?.throwIfAborted();
      if (isClosed()) throw new StoreUnavailableError(closedMessage);
      let settled = false;
      const finish = (settle: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        settle();
      };
      const onAbort = (): void => finish(() => reject(signal?.reason));
      const timer = setTimeout(
        () => finish(() => reject(new StoreUnavailableError(`valkey ${op} timed out after ${commandTimeoutMs} ms`))),
        commandTimeoutMs,
      );
      signal?.addEventListener('abort', onAbort, { once: true });

      const send = async (): Promise<T> => {
        // Too late: the caller has been told it failed, so the command must not run after all.
        if (settled) throw new Error('abandoned');
        return command(client);
      };
      (whenReady() ?? Promise.resolve()).then(send).then(
        (value) => finish(() => resolve(value)),
        (cause: unknown) => finish(() => reject(unavailable(op, cause))),
      );
    });
  };
}

function unavailable(op: string, cause: unknown): StoreUnavailableError {
  if (cause instanceof StoreUnavailableError) return cause;
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new StoreUnavailableError(`valkey ${op} failed: ${reason}`, { cause });
}
