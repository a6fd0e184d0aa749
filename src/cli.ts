#!/usr/bin/env node
// First: an old Node gets one line naming the version required, before any dependency loads.
import './node-check.ts';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createApp } from './app.ts';
import { generateSigningKeyPem, generateStoreKey } from './authserver/tokens/keys.ts';
import { ConfigError, loadConfigFile } from './config/load.ts';
import { sessionsCommand } from './cli/sessions.ts';
import { upstreamsCommand } from './cli/upstreams.ts';
import type { Config, ConfigSchemaOptions } from './config/schema.ts';
import { processSecretSources } from './config/secrets.ts';
import { resealSessionIndexes } from './authserver/records/session-index-reseal.ts';
import { formatResealReport, resealComplete, resealValues } from './store/reseal.ts';
import { createSealer } from './store/sealed.ts';
import { createValkeyStore } from './store/valkey.ts';
import { createValkeyMaintenance } from './store/valkey_maintenance.ts';
import { valkeyStoreOptions } from './store/valkey_settings.ts';

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
  if (argv[0] === 'sessions') return sessionsCommand(argv.slice(1), loadOrReport, stdio);
  if (argv[0] === 'upstreams') return upstreamsCommand(argv.slice(1), loadOrReport, stdio);
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
      const config = loadOrReport(path, { resolveSecrets });
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
        const config = loadOrReport(path);
        return config === undefined ? 1 : reseal(config);
      }
      return keys(positionals[1], values.alg ?? 'ES256');
    default:
      process.stderr.write(`mcpgate: unknown command "${command}"\n\n${USAGE}\n`);
      return 2;
  }
}

/**
 * Loads and validates a config file (the one validation `check` and `serve` share); prints every
 * problem and returns `undefined` when it is invalid.
 */
function loadOrReport(path: string, options: ConfigSchemaOptions = {}): Config | undefined {
  try {
    return loadConfigFile(path, processSecretSources, options);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      return undefined;
    }
    throw error;
  }
}

/**
 * `mcpgate keys reseal`: every value sealed under an older key of `storage.encryptionKeys` is
 * sealed again under the first, in place and keeping its TTL, and every session index entry under
 * an older key is swapped for one under the first (the session record's copy with it). Exit 0
 * when every sealed value and index entry is now under the first key (the older ones can be
 * removed), 1 when some could not be opened or kept changing (rerun), or the store failed.
 */
async function reseal(config: Config): Promise<number> {
  const valkey = config.storage.valkey;
  if (config.storage.kind !== 'valkey' || valkey === undefined) {
    process.stdout.write(
      'mcpgate keys reseal: storage.kind is memory: nothing is stored outside the gateway process, so there is nothing to reseal\n' +
        '(its values die with the process; after a restart everything is sealed under the first key).\n',
    );
    return 0;
  }
  const keys = config.storage.encryptionKeys.map((k) => ({ id: k.id, key: Buffer.from(k.key, 'base64') }));
  if (keys.length === 0) {
    process.stderr.write('mcpgate keys reseal: storage.encryptionKeys is empty: nothing is sealed, so nothing can be resealed\n');
    return 1;
  }
  let source;
  try {
    source = await createValkeyMaintenance(valkeyStoreOptions(valkey));
  } catch (error) {
    process.stderr.write(`mcpgate keys reseal: ${(error as Error).message}\n`);
    return 1;
  }
  const store = createValkeyStore(valkeyStoreOptions(valkey));
  try {
    process.stdout.write(`mcpgate keys reseal: sealing every value and session index entry under key "${keys[0]!.id}" (keys under prefix "${valkey.keyPrefix}")\n`);
    const values = await resealValues({ source, keys });
    // Then the index entries: each swap rewrites its session record (already resealed above) to name the new entries.
    const indexes = await resealSessionIndexes({ source, store, sealer: createSealer({ keys }), sealingKeyId: keys[0]!.id });
    const report = { ...values, indexes };
    process.stdout.write(formatResealReport(report));
    if (report.unreadable > 0) {
      process.stderr.write(
        `mcpgate keys reseal: ${report.unreadable} value${report.unreadable === 1 ? '' : 's'} could not be opened by any configured key; ` +
          'they stay as they are (add the key they were sealed with back to storage.encryptionKeys, or let them expire)\n',
      );
    }
    if (indexes.unreadable > 0) {
      process.stderr.write(
        `mcpgate keys reseal: ${indexes.unreadable} session index entr${indexes.unreadable === 1 ? 'y' : 'ies'} could not be opened by any configured key; ` +
          'they stay as they are (listing sessions drops them: add the key they were sealed with back to storage.encryptionKeys to keep them)\n',
      );
    }
    if (report.changed > 0 || indexes.changed > 0) {
      process.stderr.write(`mcpgate keys reseal: ${report.changed} value(s) and ${indexes.changed} session(s) changed during the run; run it again\n`);
    }
    if (!resealComplete(report)) return 1;
    process.stdout.write(`done: every sealed value and session index entry is under "${report.sealingKeyId}"; the other keys can be removed from storage.encryptionKeys\n`);
    return 0;
  } catch (error) {
    process.stderr.write(`mcpgate keys reseal: ${(error as Error).message} (every step is safe to repeat: run it again)\n`);
    return 1;
  } finally {
    await source.close();
    await store.close().catch(() => undefined);
  }
}

/** `mcpgate keys generate`: key material for `authServer.signingKeys` and `storage.encryptionKeys`. */
function keys(subcommand: string | undefined, alg: string): number {
  if (subcommand !== 'generate') {
    process.stderr.write('usage: mcpgate keys generate [--alg ES256|RS256|EdDSA] | mcpgate keys reseal --config FILE\n');
    return 2;
  }
  if (alg !== 'ES256' && alg !== 'RS256' && alg !== 'EdDSA') {
    process.stderr.write(`mcpgate keys generate: --alg must be ES256, RS256 or EdDSA, not "${alg}"\n`);
    return 2;
  }
  process.stdout.write(
    `# Token-signing key (${alg}). Save the PEM block as a file readable only by mcpgate, e.g.\n` +
      '# /etc/mcpgate/keys/signing.pem, and list it first: authServer.signingKeys: ["file:/etc/mcpgate/keys/signing.pem"]\n' +
      generateSigningKeyPem(alg) +
      '\n# Store encryption key (32 bytes, base64). Keep it in a secret, e.g. the variable MCPGATE_STORE_KEY, and use\n' +
      '# storage.encryptionKeys: [{ id: "k1", key: "env:MCPGATE_STORE_KEY" }]\n' +
      `${generateStoreKey()}\n`,
  );
  return 0;
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
