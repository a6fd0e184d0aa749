import { pino, type DestinationStream, type Logger } from 'pino';
import { LineWriter } from './line-writer.ts';

export type { Logger } from 'pino';

/**
 * Field paths whose values are replaced by "[redacted]" wherever they appear in a log line:
 * credentials, cookies, tokens, codes, verifiers and client secrets.
 */
export const REDACT_PATHS = [
  'authorization', 'cookie', 'set-cookie', 'password', 'secret', 'token',
  'access_token', 'refresh_token', 'id_token', 'client_secret', 'code', 'code_verifier', 'state',
  '*.authorization', '*.cookie', '*["set-cookie"]', '*.password', '*.secret', '*.token',
  '*.access_token', '*.refresh_token', '*.id_token', '*.client_secret', '*.code', '*.code_verifier', '*.state',
  '*.headers.authorization', '*.headers.cookie', '*.headers["set-cookie"]', '*.headers["proxy-authorization"]',
];

/**
 * Creates the JSON logger; `destination` lets tests capture lines. Without one, lines go to
 * stdout through a `LineWriter`: those of one event-loop turn in one synchronous `write(2)` at
 * its end. pino's default stdout stream hands each write to libuv's thread pool (a hand-off per
 * access-log line cost about 6 µs), and its synchronous mode makes a `write(2)` per line (about
 * 2 µs a request; both bench/README.md). Writes stay synchronous, so a line is never lost while
 * the process lives, and the last turn's lines are written at exit.
 */
export function createLogger(options: { level: string; destination?: DestinationStream }): Logger {
  return pino(
    {
      level: options.level,
      base: { service: 'mcpgate' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? new LineWriter(1),
  );
}

let lastMs = Number.NaN;
let lastTime = '';

/**
 * pino's ISO time field (`,"time":"2026-12-04T07:00:00.000Z"`, as `stdTimeFunctions.isoTime`
 * writes it), formatted once per millisecond: a busy gateway writes several lines a millisecond,
 * and formatting each line's time took 1.7 % of its CPU (bench/README.md).
 */
function isoTime(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
}

/** A session id cut to 8 characters: enough to correlate log lines, useless to an attacker. */
export function sessionTag(id: string | undefined): string | undefined {
  return id === undefined ? undefined : id.slice(0, 8);
}
