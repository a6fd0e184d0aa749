import { writeSync } from 'node:fs';

/** Characters held before a write even within one turn (a burst of long lines, a loop that logs). */
const MAX_PENDING_CHARS = 64 * 1024;
/** How long one retry waits when the reader of a full pipe has not caught up. */
const RETRY_WAIT_MS = 1;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/**
 * The log's destination: the lines logged during one turn of the event loop, written to `fd`
 * (stdout) together at the end of that turn with one synchronous `write(2)`. A busy gateway ends
 * several requests a turn, and a write per access-log line cost about 2 µs of its CPU per request
 * (bench/README.md); gathered, the write costs a fraction of that per line. A line still leaves
 * the process in the turn it was logged (nothing waits for a timer or a fill level), and the
 * lines of the last turn are written when the process exits, however it exits but SIGKILL.
 * A full pipe (a slow log collector) is waited for, as a synchronous write waits: lines are not
 * dropped and their order is kept.
 */
export class LineWriter {
  readonly #fd: number;
  #pending = '';
  #scheduled = false;
  readonly #atTurnEnd = (): void => {
    this.#scheduled = false;
    this.flushSync();
  };

  constructor(fd: number) {
    this.#fd = fd;
    if (writers.size === 0) process.on('exit', flushAll);
    writers.add(this);
  }

  /** pino's stream interface: one line, newline included. */
  write(line: string): void {
    this.#pending += line;
    if (this.#pending.length >= MAX_PENDING_CHARS) this.flushSync();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#atTurnEnd);
    }
  }

  /** pino's `logger.flush(cb)`: everything pending is written before `cb` runs. */
  flush(cb?: (error?: Error) => void): void {
    try {
      this.flushSync();
    } catch (error) {
      return cb?.(error as Error);
    }
    cb?.();
  }

  /** Writes every pending line now, retrying a full pipe until its reader takes them. */
  flushSync(): void {
    if (this.#pending === '') return;
    const text = this.#pending;
    this.#pending = '';
    let rest: string | Buffer = text;
    for (;;) {
      let written: number;
      try {
        written = typeof rest === 'string' ? writeSync(this.#fd, rest) : writeSync(this.#fd, rest);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
        Atomics.wait(SLEEPER, 0, 0, RETRY_WAIT_MS);
        continue;
      }
      // A pipe can take part of a write; what it did not take is written next, from that byte on.
      if (typeof rest === 'string') {
        if (written >= Buffer.byteLength(rest)) return;
        rest = Buffer.from(rest).subarray(written);
      } else {
        if (written >= rest.length) return;
        rest = rest.subarray(written);
      }
    }
  }
}

/** Every writer of this process, written out by one `exit` listener. */
const writers = new Set<LineWriter>();
function flushAll(): void {
  for (const writer of writers) writer.flushSync();
}
