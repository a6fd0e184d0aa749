import type { DestinationStream } from 'pino';

/** Log lines collected in memory, for assertions on what the gateway logged. */
export interface LogCapture {
  /** Give this to `createApp(config, { logDestination })`. */
  destination: DestinationStream;
  /** Every line written so far, as written (JSON text). */
  lines: string[];
  /** The lines parsed as JSON objects. */
  records(): Array<Record<string, unknown>>;
  /** All lines joined: search it for anything that must never be logged. */
  text(): string;
}

/** A pino destination that keeps every line instead of writing it out. */
export function captureLogs(): LogCapture {
  const lines: string[] = [];
  return {
    destination: {
      write(chunk: string) {
        for (const line of chunk.split('\n')) if (line) lines.push(line);
      },
    },
    lines,
    records: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>),
    text: () => lines.join('\n'),
  };
}
