/**
 * A throwaway `redis-server` for tests: its own free port, no persistence, stopped by PID.
 * Never the shared server on 6379. When the binary is missing the test fails, never skips:
 * a skipped Valkey suite would let the adapter rot unnoticed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** A running test server. */
export interface RedisServer {
  readonly port: number;
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  /** Stops the server (SIGTERM, then SIGKILL after 3 s) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port (stopping it first if needed); resolves once it answers PING. */
  restart(): Promise<void>;
  /** Freezes the process (SIGSTOP): connections stay open but nothing answers. */
  pause(): void;
  /** Undoes `pause` (SIGCONT). */
  resume(): void;
}

/** Binary to run; `REDIS_SERVER=valkey-server` runs the suite against Valkey instead. */
const BINARY = process.env['REDIS_SERVER'] ?? 'redis-server';
const START_TIMEOUT_MS = 5000;

/** Options of {@link startRedis}. */
export interface StartRedisOptions {
  /** Extra server arguments, e.g. `['--cluster-enabled', 'yes']`. */
  args?: string[];
  /** Run as a Sentinel watching the master on this loopback port under this name, instead of a server. */
  sentinelFor?: { masterName: string; port: number };
}

/** Starts `redis-server` (or a Sentinel) on a free loopback port and resolves once it answers PING. */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'mcpgate-redis-'));
  const mode = options.sentinelFor === undefined ? [] : [join(dir, 'sentinel.conf'), '--sentinel'];
  const args = [...mode, '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...(options.args ?? [])];
  let child: ChildProcess | undefined;
  // Belt and braces: a crashed test run must not leave servers behind.
  const killOnExit = (): void => {
    child?.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  const launch = async (): Promise<void> => {
    mkdirSync(dir, { recursive: true }); // stop() removed it
    if (options.sentinelFor !== undefined) {
      // A Sentinel insists on a config file it can rewrite.
      const { masterName, port: masterPort } = options.sentinelFor;
      writeFileSync(join(dir, 'sentinel.conf'), `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} 1\n`);
    }
    child = await spawnServer(args, port);
  };
  const stop = async (): Promise<void> => {
    const running = child;
    child = undefined;
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return;
    const exited = new Promise((resolve) => running.once('exit', resolve));
    running.kill('SIGCONT'); // a paused server cannot handle SIGTERM
    running.kill('SIGTERM');
    const forced = setTimeout(() => running.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(forced);
  };

  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      await stop();
      process.removeListener('exit', killOnExit);
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await stop();
      process.once('exit', killOnExit);
      await launch();
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
  };
}

async function spawnServer(args: string[], port: number): Promise<ChildProcess> {
  const child = spawn(BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);

  const failed = new Promise<never>((_, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'ENOENT'
          ? new Error(`${BINARY} not found on PATH: the Valkey store tests need it (apt-get install redis-server)`, { cause: error })
          : error,
      );
    });
    child.once('exit', (code, signal) => {
      reject(new Error(`${BINARY} exited during start-up (${signal ?? code}):\n${output}`));
    });
  });
  failed.catch(() => undefined); // only awaited while starting
  await Promise.race([waitForPong(port), failed]);
  return child;
}

async function waitForPong(port: number): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await answersPing(port)) return;
    await sleep(20);
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${START_TIMEOUT_MS} ms`);
}

function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString();
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

/** A port nobody listens on right now (the OS picks it; the tiny reuse race is acceptable in tests). */
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
