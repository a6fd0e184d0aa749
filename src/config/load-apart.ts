import { fork } from 'node:child_process';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from './config-error.ts';
import type { Config, ConfigSchemaOptions } from './schema.ts';

/** What the validating process sends back: the config, every problem found, or why it failed. */
export type ApartAnswer = { config: Config } | { source: string; problems: string[] } | { error: string };

/** The validating process's entry point, beside this module (`.ts` from source, `.js` once built). */
const CHILD = fileURLToPath(new URL(`./load-apart-child${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

/**
 * Reads, parses and validates a config file in a short-lived child process, as `loadConfigFile`
 * would in this one, and resolves with the same config. The YAML parser and the schema library
 * then never load into a serving gateway: they held about 10 MB of its idle memory for the
 * whole life of the process, once, at start (bench/README.md). The child reads the same
 * environment and files (it inherits both unless `env` is given) and sends the config over its
 * IPC channel, never through a pipe or a file another process could read.
 * Rejects with `ConfigError` listing every problem, or an Error when the child failed.
 */
export function loadConfigApart(path: string, options: ConfigSchemaOptions = {}, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  return new Promise((resolve, reject) => {
    let answer: ApartAnswer | undefined;
    // No execArgv: the gateway's own flags (a profiler, heap limits) are not the validator's.
    const child = fork(CHILD, [path, JSON.stringify(options)], { env, execArgv: [], serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('message', (message) => (answer = message as ApartAnswer));
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (answer === undefined) return reject(new Error(`config validation process ended (${signal ?? `exit ${code}`}) without an answer`));
      if ('config' in answer) return resolve(answer.config);
      if ('problems' in answer) return reject(new ConfigError(answer.source, answer.problems));
      reject(new Error(`config validation failed: ${answer.error}`));
    });
  });
}
