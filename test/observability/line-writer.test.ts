/**
 * The log's stdout writer gathers the lines of one event-loop turn into one write. What an
 * operator relies on: every line arrives, whole and in order, in the turn it was logged; the
 * last lines before an exit or a crash are not lost; a slow reader of the pipe loses nothing.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { LineWriter } from '../../src/observability/line-writer.ts';

const dir = mkdtempSync(join(tmpdir(), 'mcpgate-line-writer-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const LOGGER = new URL('../../src/observability/logger.ts', import.meta.url).href;

/** Runs `code` (an ES module body with `createLogger` imported) in a child; its stdout, stderr and exit code. */
function child(code: string, options: { slowReader?: boolean } = {}): Promise<{ stdout: string; stderr: string; code: number | null }> {
  const script = `import { createLogger } from ${JSON.stringify(LOGGER)};\n${code}`;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let stderr = '';
  proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  if (options.slowReader) {
    // Read nothing for a while, so the pipe fills and the writer has to wait for its reader.
    proc.stdout.pause();
    setTimeout(() => proc.stdout.resume(), 500);
  }
  proc.stdout.on('data', (chunk: Buffer) => out.push(chunk));
  return new Promise((resolve) => proc.once('close', (code) => resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr, code })));
}

describe('log lines to stdout', () => {
  it('writes the lines of a turn together at its end, whole and in order, multi-byte text intact', async () => {
    const file = join(dir, 'turn.log');
    const fd = openSync(file, 'w');
    try {
      const writer = new LineWriter(fd);
      writer.write('{"n":1,"text":"café"}\n');
      writer.write('{"n":2,"text":"🙂 ok"}\n');
      writer.write('{"n":3}\n');
      assert.equal(readFileSync(file, 'utf8'), '', 'nothing written before the turn ends');
      await turn();
      assert.equal(readFileSync(file, 'utf8'), '{"n":1,"text":"café"}\n{"n":2,"text":"🙂 ok"}\n{"n":3}\n');
      writer.write('{"n":4}\n');
      await turn();
      assert.equal(readFileSync(file, 'utf8').split('\n').length - 1, 4, 'a later turn is written in its own turn');
    } finally {
      closeSync(fd);
    }
  });

  it('writes a long burst before the turn ends, and everything on flush', async () => {
    const file = join(dir, 'burst.log');
    const fd = openSync(file, 'w');
    try {
      const writer = new LineWriter(fd);
      const line = `{"pad":"${'x'.repeat(990)}"}\n`;
      for (let i = 0; i < 100; i++) writer.write(line);
      assert.ok(readFileSync(file, 'utf8').length >= 64 * 1024, 'past 64 KB pending, lines are written at once');
      await new Promise<void>((resolve, reject) => writer.flush((error) => (error ? reject(error) : resolve())));
      assert.equal(readFileSync(file, 'utf8'), line.repeat(100));
    } finally {
      closeSync(fd);
    }
  });

  it('writes the last lines when the process exits, and before a crash is reported', async () => {
    const exited = await child(`const log = createLogger({ level: 'info' }); log.info({ msg: 'one' }); log.info({ msg: 'two' }); process.exit(3);`);
    assert.equal(exited.code, 3);
    assert.deepEqual(exited.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { msg: string }).msg), ['one', 'two']);
    const crashed = await child(`const log = createLogger({ level: 'info' }); setTimeout(() => { log.info({ msg: 'before the crash' }); throw new Error('boom'); }, 5);`);
    assert.notEqual(crashed.code, 0);
    assert.match(crashed.stderr, /boom/);
    assert.equal((JSON.parse(crashed.stdout.trim()) as { msg: string }).msg, 'before the crash');
  });

  it('loses nothing and keeps the order when the reader of the pipe is slow', async () => {
    const lines = 20_000;
    const run = await child(
      // process.stdout, once touched, puts the pipe in non-blocking mode (libuv): a full pipe then
      // refuses writes with EAGAIN instead of blocking, which the writer must wait out.
      `process.stdout;
       const log = createLogger({ level: 'info' });
       let i = 0;
       const tick = () => { for (let k = 0; k < 500 && i < ${lines}; k++) log.info({ msg: 'line', i: i++, pad: 'y'.repeat(200) }); if (i < ${lines}) setImmediate(tick); };
       tick();`,
      { slowReader: true },
    );
    assert.equal(run.code, 0, run.stderr);
    const seen = run.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { i: number }).i);
    assert.equal(seen.length, lines);
    assert.ok(seen.every((n, index) => n === index), 'in order');
  });
});
