/**
 * `npm test`'s preflight (the `pretest` script): the suite runs against real peers, and three of
 * them are system programs — Chromium for the browser legs, `redis-server` for the Valkey suites,
 * `kubectl` for rendering deploy/. A missing one used to show up as 23 failures deep into the run.
 * Now, before any test:
 * - everything there → nothing printed, exit 0;
 * - something missing, running as root with `apt-get` → installs it (Debian's `chromium`,
 *   `redis-server`, `kubernetes-client`), then checks again;
 * - otherwise → one line per missing program with the exact command that installs it, exit 1.
 *
 * `MCPGATE_PREFLIGHT_NO_INSTALL=1` never installs (say what to run instead). `REDIS_SERVER` names
 * another redis-server binary, as for the tests (`test/support/redis.ts`).
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

/** Where the browser tests launch Chromium (`test/support/browser-agent.ts` `CHROMIUM_PATH`). */
export const CHROMIUM_PATH = '/usr/bin/chromium';

/** A program the suite needs, and the Debian package that provides it. */
export interface Requirement {
  /** How the line names it. */
  name: string;
  /** An absolute path, or a name looked up on PATH. */
  program: string;
  /** The Debian/Ubuntu package. */
  aptPackage: string;
  /** Which tests need it. */
  neededBy: string;
}

/** The programs `npm test` needs, in the environment `env`. */
export function requirements(env: NodeJS.ProcessEnv): Requirement[] {
  return [
    { name: 'chromium', program: CHROMIUM_PATH, aptPackage: 'chromium', neededBy: 'the browser tests' },
    { name: 'redis-server', program: env['REDIS_SERVER'] || 'redis-server', aptPackage: 'redis-server', neededBy: 'the Valkey storage tests' },
    { name: 'kubectl', program: 'kubectl', aptPackage: 'kubernetes-client', neededBy: 'the deploy manifest tests' },
  ];
}

/** The executable `program` resolves to on `PATH`, or undefined. */
export function findProgram(program: string, path: string | undefined): string | undefined {
  const candidates = isAbsolute(program) ? [program] : (path ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, program));
  return candidates.find((file) => {
    try {
      accessSync(file, constants.X_OK);
      return statSync(file).isFile();
    } catch {
      return false;
    }
  });
}

/** The requirements not met in `env`. */
export function missing(env: NodeJS.ProcessEnv): Requirement[] {
  return requirements(env).filter((r) => findProgram(r.program, env['PATH']) === undefined);
}

/** The line telling the user what to run for `r`. */
export function instruction(r: Requirement, asRoot: boolean): string {
  const sudo = asRoot ? '' : 'sudo ';
  const where = isAbsolute(r.program) ? `at ${r.program}` : r.program === r.name ? 'on PATH' : `on PATH (as ${r.program})`;
  return `npm test needs ${r.name} ${where} for ${r.neededBy}; install it with: ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${r.aptPackage}`;
}

/** Runs the preflight in `env`; returns the exit code. Writes only when something is missing. */
export function preflight(env: NodeJS.ProcessEnv, write: (line: string) => void): number {
  let absent = missing(env);
  if (absent.length === 0) return 0;
  const asRoot = process.getuid?.() === 0;
  const apt = findProgram('apt-get', env['PATH']);
  const mayInstall = asRoot && apt !== undefined && env['MCPGATE_PREFLIGHT_NO_INSTALL'] !== '1';
  if (mayInstall) {
    const packages = absent.map((r) => r.aptPackage);
    write(`npm test: installing ${packages.join(', ')} (missing: ${absent.map((r) => r.name).join(', ')})`);
    const aptEnv = { ...env, DEBIAN_FRONTEND: 'noninteractive' };
    const update = spawnSync(apt, ['update', '-qq'], { env: aptEnv, stdio: ['ignore', 'ignore', 'inherit'] });
    const install =
      update.status === 0 ? spawnSync(apt, ['install', '-y', '-qq', '--no-install-recommends', ...packages], { env: aptEnv, stdio: ['ignore', 'ignore', 'inherit'] }) : update;
    if (install.status !== 0) write(`npm test: apt-get failed (exit ${install.status ?? install.signal})`);
    absent = missing(env);
    if (absent.length === 0) return 0;
  } else if (asRoot && apt === undefined) {
    write('npm test: apt-get is not available here; install these with your package manager (Debian package names shown):');
  }
  for (const r of absent) write(instruction(r, asRoot));
  if (absent.length > 1) {
    const sudo = asRoot ? '' : 'sudo ';
    write(`all at once: ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${absent.map((r) => r.aptPackage).join(' ')}`);
  }
  return 1;
}

if (import.meta.main) {
  process.exitCode = preflight(process.env, (line) => process.stderr.write(`${line}\n`));
}
