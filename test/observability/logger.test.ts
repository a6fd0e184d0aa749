/**
 * The logger's lines: the time field as pino's ISO time function writes it, for the millisecond
 * the line is written (the formatted time is kept for one millisecond only).
 */
import { describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/observability/logger.ts';
import { captureLogs } from '../support/logs.ts';

describe('the logger', () => {
  it('writes the ISO time of the millisecond each line is written', () => {
    mock.timers.enable({ apis: ['Date'], now: Date.parse('2026-12-04T07:00:00.000Z') });
    try {
      const logs = captureLogs();
      const logger = createLogger({ level: 'info', destination: logs.destination });
      logger.info({ msg: 'one' });
      logger.info({ msg: 'two' });
      mock.timers.tick(1);
      logger.info({ msg: 'three' });
      mock.timers.tick(86_400_000 + 999);
      logger.info({ msg: 'four' });
      assert.deepEqual(
        logs.records().map((r) => r.time),
        ['2026-12-04T07:00:00.000Z', '2026-12-04T07:00:00.000Z', '2026-12-04T07:00:00.001Z', '2026-12-05T07:00:01.000Z'],
      );
      assert.match(logs.lines[0]!, /^\{"level":"info","time":"2026-12-04T07:00:00\.000Z","service":"mcpgate","msg":"one"\}$/);
    } finally {
      mock.timers.reset();
    }
  });
});
