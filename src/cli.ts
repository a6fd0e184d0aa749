#!/usr/bin/env node
// First: an old Node gets one line naming the version required, before any dependency loads.
import './node-check.ts';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createApp } from './app.ts';
import { ConfigError } from './config/config-error.ts';
import { loadConfigApart } from './config/load-apart.ts';
import type { Config, ConfigSchemaOptions } from './config/schema.ts';
import { processSecretSources } from './config/secrets.ts';

const USAGE = `mcpgate — OAuth 2.1 gateway for remote MCP servers

Usage:
  mcpgate serve --config FILE     run the gateway
  mcpgate check --config FILE [--no-secrets]
                                  validate a config file as serve would; prints every problem, exits 1 if any.
                                  --no-secrets: check the form of env:/file: references without reading
                                  them (a deployment's config, on a machine without its secrets)
  mcpgate keys generate [--alg ES256|RS256|EdDSA]
                                  print a new token-signing key (PKCS#8 PEM) and a store encryption key
  mcpgate keys reseal --config FILE
                                  seal every stored value and session index entry under the first of
                                  storage.encryptionKeys, so an older key can be removed (safe while
                                  the gateway serves)
  mcpgate sessions list [--user USER] --config FILE
                                  the live login sessions (user, session id prefix, client, created, expires)
  mcpgate sessions revoke (--user USER | --session ID) --config FILE
                                  end sessions now on every replica and revoke their upstream grants
  mcpgate upstreams deregister NAME --config FILE
                                  delete this gateway's registrations at the upstream's authorization
                                  server (RFC 7592) and forget them
  mcpgate --version | --help

--config may be left out when MCPGATE_CONFIG names the file.
Environment overrides: MCPGATE_LISTEN (server.listen), MCPGATE_PUBLIC_URL (server.publicUrl),
MCPGATE_LOG_LEVEL (server.logLevel).
Docs: README.md and docs/ in the repository.`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Where operators' commands write. */
const stdio = { stdout: (text: string) => void process.stdout.write(text), stderr: (text: string) => void process.stderr.write(text) };

async function main(argv: string[]): Promise<number> {
  // Subcommand modules parse their own options.
  // Each command's module loads when it runs: none of them belongs in a serving gateway's memory.
  if (argv[0] === 'sessions') return (await import('./cli/sessions.ts')).sessionsCommand(argv.slice(1), await inProcessLoader(), stdio);
  if (argv[0] === 'upstreams') return (await import('./cli/upstreams.ts')).upstreamsCommand(argv.slice(1), await inProcessLoader(), stdio);
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      'no-secrets': { type: 'boolean' },
      alg: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  });
  if (values.version) {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const [command] = positionals;
  if (values.help || !command) {
    process.stdout.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  switch (command) {
    case 'check':
    case 'serve': {
      const path = values.config ?? process.env.MCPGATE_CONFIG;
      if (!path) {
        process.stderr.write(`mcpgate ${command}: --config FILE is required\n`);
        return 2;
      }
      const resolveSecrets = !(command === 'check' && values['no-secrets'] === true);
      // serve validates in a child process, so the parser and schema never load into the gateway.
      const config = command === 'serve' ? await reported(loadConfigApart(path)) : (await inProcessLoader())(path, { resolveSecrets });
      if (config === undefined) return 1;
      if (command === 'check') {
        const upstreams = `${config.upstreams.length} upstream${config.upstreams.length === 1 ? '' : 's'}`;
        process.stdout.write(`${path}: ok (${upstreams}${resolveSecrets ? '' : '; secrets not read: only the form of their references was checked'})\n`);
        return 0;
      }
      return serve(createApp(config), config.server.drainTimeout);
    }
    case 'keys':
      if (positionals[1] === 'reseal') {
        const path = values.config ?? process.env.MCPGATE_CONFIG;
        if (!path) {
          process.stderr.write('mcpgate keys reseal: --config FILE is required\n');
          return 2;
        }
        const config = (await inProcessLoader())(path);
        return config === undefined ? 1 : (await import('./cli/keys.ts')).reseal(config);
      }
      return (await import('./cli/keys.ts')).keys(positionals[1], values.alg ?? 'ES256');
    default:
      process.stderr.write(`mcpgate: unknown command "${command}"\n\n${USAGE}\n`);
      return 2;
  }
}

/**
 * The config loader of the operator commands (`check`, `keys reseal`, `sessions`, `upstreams`):
 * validation in this process, loaded on first use. It prints every problem and returns
 * `undefined` when the file is invalid.
 */
async function inProcessLoader(): Promise<(path: string, options?: ConfigSchemaOptions) => Config | undefined> {
  const { loadConfigFile } = await import('./config/load.ts');
  return (path, options = {}) => {
    try {
      return loadConfigFile(path, processSecretSources, options);
    } catch (error) {
      return report(error);
    }
  };
}

/** `loading`'s config, or `undefined` once every problem is printed (the same lines as `check`). */
async function reported(loading: Promise<Config>): Promise<Config | undefined> {
  try {
    return await loading;
  } catch (error) {
    return report(error);
  }
}

/** Prints a ConfigError's problems and returns `undefined`; anything else is rethrown. */
function report(error: unknown): undefined {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`${error.message}\n`);
  return undefined;
}

/**
 * Runs until SIGTERM/SIGINT, then drains (app.close: /readyz fails at once, the listener closes,
 * SSE streams end at an event boundary, requests in flight finish within `drainTimeoutMs`).
 */
async function serve(app: ReturnType<typeof createApp>, drainTimeoutMs: number): Promise<number> {
  // The handlers are in place before "listening" is logged: a SIGTERM sent the moment a
  // supervisor sees that line would otherwise kill the process without the drain.
  let signalled: string | undefined;
  let onSignal = (signal: string): void => {
    signalled ??= signal;
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  await app.listen();
  return new Promise((resolve) => {
    let stopping = false;
    onSignal = (signal) => {
      if (stopping) return;
      stopping = true;
      app.logger.info({ msg: 'shutting down', signal, inFlight: app.frontDoor.inFlight() });
      // The drain is bounded by drainTimeout; closing the store connections after it by a few
      // seconds more (a frozen Valkey never answers QUIT). Past that, exit anyway: the
      // orchestrator's grace period is counted from the signal.
      setTimeout(() => {
        app.logger.error({ msg: 'shutdown did not finish in time; exiting', drainTimeoutMs });
        process.exit(1);
      }, drainTimeoutMs + 3000).unref();
      app.close().then(() => resolve(0), () => resolve(1));
    };
    if (signalled !== undefined) onSignal(signalled);
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`mcpgate: ${(error as Error).message}\n`);
    process.exitCode = 1;
  },
);
