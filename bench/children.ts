import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setPriority } from 'node:os';

/**
 * The plumbing of the benchmark's process tree: each part (upstream, gateway, load generator)
 * is a child `node` process, optionally pinned to one core with `taskset`, driven over the
 * Node IPC channel with small request/response messages, so its CPU time can be read per
 * process from /proc.
 */

interface CallMessage {
  call: number;
  op: string;
  args: Record<string, unknown>;
}
interface ReplyMessage {
  reply: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}
interface ReadyMessage {
  ready: unknown;
}

/** A running child: its pid (the `node` process itself, `taskset` execs it) and an RPC call. */
export interface Child {
  name: string;
  pid: number;
  process: ChildProcess;
  /** What the child sent when it became ready (for servers: the URL it listens on). */
  ready: unknown;
  /** The core it is pinned to, or undefined when it runs on any core. */
  cpu: number | undefined;
  call<T>(op: string, args?: Record<string, unknown>): Promise<T>;
  /** Sends SIGTERM and waits for the exit. */
  stop(): Promise<void>;
}

/** True when `taskset` (util-linux) can pin processes on this machine. */
export const HAVE_TASKSET = (() => {
  try {
    execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/**
 * Starts `node [nodeFlags] script [args]` with an IPC channel and waits for its ready message.
 * stdout goes to /dev/null (the gateway's access log lands there: pino's default sync stdout
 * writes, as in production, with nothing reading them).
 * @param cpu core to pin to with `taskset -c`; ignored when taskset is missing
 */
export function startChild(options: { name: string; script: string; args?: string[]; nodeFlags?: string[]; cpu?: number; nice?: number }): Promise<Child> {
  const nodeArgs = [...(options.nodeFlags ?? []), options.script, ...(options.args ?? [])];
  const pinned = HAVE_TASKSET && options.cpu !== undefined;
  const child = pinned
    ? spawn('taskset', ['-c', String(options.cpu), process.execPath, ...nodeArgs], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    : spawn(process.execPath, nodeArgs, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  if (options.nice !== undefined && child.pid !== undefined) raisePriority(child.pid, options.nice);
  let nextCall = 1;
  const pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  return new Promise<Child>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      const error = new Error(`${options.name} exited (${code ?? signal})`);
      for (const p of pending.values()) p.reject(error);
      pending.clear();
      reject(error);
    });
    child.on('message', (message: ReplyMessage | ReadyMessage) => {
      if ('ready' in message) {
        resolve({
          name: options.name,
          pid: child.pid!,
          process: child,
          ready: message.ready,
          cpu: pinned ? options.cpu : undefined,
          call<T>(op: string, args: Record<string, unknown> = {}) {
            return new Promise<T>((res, rej) => {
              const call = nextCall++;
              pending.set(call, { resolve: res as (value: unknown) => void, reject: rej });
              child.send({ call, op, args } satisfies CallMessage);
            });
          },
          async stop() {
            if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
            await exited;
          },
        });
        return;
      }
      const p = pending.get(message.reply);
      if (!p) return;
      pending.delete(message.reply);
      if (message.ok) p.resolve(message.result);
      else p.reject(new Error(`${options.name}: ${message.error}`));
    });
  });
}

/** Sets a process's nice value; false when not allowed (raising priority needs root or CAP_SYS_NICE). */
export function raisePriority(pid: number, nice: number): boolean {
  try {
    setPriority(pid, nice);
    return true;
  } catch {
    return false;
  }
}

/** In a child: answers calls from the parent with these handlers, then announces `ready`. */
export function serveParent(handlers: Record<string, (args: Record<string, unknown>) => unknown>, ready: unknown): void {
  process.on('message', (message: CallMessage) => {
    void (async () => {
      try {
        const handler = handlers[message.op];
        if (!handler) throw new Error(`unknown op ${message.op}`);
        const result = await handler(message.args);
        process.send!({ reply: message.call, ok: true, result } satisfies ReplyMessage);
      } catch (error) {
        process.send!({ reply: message.call, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies ReplyMessage);
      }
    })();
  });
  // The parent going away must not leave a server running.
  process.once('disconnect', () => process.exit(0));
  process.send!({ ready } satisfies ReadyMessage);
}

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU time (user + system) a process has used so far, in µs, from /proc/<pid>/stat (resolution: one clock tick, 10 ms). */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "pid (comm) ": state is field 3, utime 14, stime 15 (proc(5)).
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(rest[11]) + Number(rest[12])) * 1e6) / CLOCK_TICKS;
}

/**
 * Busy CPU time of the whole machine so far, in µs, from the first line of /proc/stat: user,
 * nice, system, irq, softirq and steal. Loopback TCP delivery runs as softirq inside the
 * sending process and is charged to it as well, so this minus the bench processes' own time is
 * what other processes (and the hypervisor) took.
 */
export function machineBusyMicros(): number {
  const [user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  return ((user! + nice! + system! + irq! + softirq! + steal!) * 1e6) / CLOCK_TICKS;
}

/** Resident set size of a process, in bytes, from /proc/<pid>/status. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return kb ? Number(kb[1]) * 1024 : 0;
}
