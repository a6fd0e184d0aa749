import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A throwaway `redis-server` for `--store valkey`, as test/support/redis.ts starts one for the
 * tests (its own free loopback port, no persistence, stopped by PID; never the shared server on
 * 6379), pinned with `taskset` beside the upstream. `REDIS_SERVER=valkey-server` runs Valkey.
 */
export interface BenchRedis {
  url: string;
  pid: number;
  /** Commands the server has executed so far (the `calls` of INFO commandstats, summed), INFO itself excluded. */
  commandCalls(): number;
  stop(): Promise<void>;
}

export async function startBenchRedis(cpu: number | undefined): Promise<BenchRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'mcpgate-bench-redis-'));
  const binary = process.env['REDIS_SERVER'] ?? 'redis-server';
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const child = cpu === undefined ? spawn(binary, args, { stdio: 'ignore' }) : spawn('taskset', ['-c', String(cpu), binary, ...args], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const cli = (...command: string[]) => execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...command], { encoding: 'utf8' });
  for (let i = 0; ; i++) {
    try {
      if (cli('PING').trim() === 'PONG') break;
    } catch {
      // not up yet
    }
    if (i > 100 || child.exitCode !== null) throw new Error(`${binary} did not start on port ${port}`);
    await sleep(50);
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid!,
    commandCalls() {
      let calls = 0;
      for (const match of cli('INFO', 'commandstats').matchAll(/^cmdstat_(\w+(?:\|\w+)?):calls=(\d+)/gm)) {
        if (match[1] !== 'info') calls += Number(match[2]);
      }
      return calls;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
