import { pino, type DestinationStream, type Logger } from 'pino';

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
 * Creates the JSON logger; `destination` lets tests capture lines. Without one, each line goes to
 * stdout with one synchronous `write(2)`: pino's default stdout stream hands each write to
 * libuv's thread pool, and a hand-off per access-log line cost about 6 µs (twice the write
 * itself; bench/README.md). Synchronous writes also lose no line when the process dies.
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
    options.destination ?? pino.destination({ dest: 1, sync: true }),
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
