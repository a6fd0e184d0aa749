#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createApp } from './app.ts';
import { generateSigningKeyPem, generateStoreKey } from './authserver/keys.ts';
import { ConfigError, loadConfigFile } from './config/load.ts';

const USAGE = `mcpgate — OAuth 2.1 gateway for remote MCP servers

Usage:
  mcpgate serve --config FILE     run the gateway
  mcpgate check --config FILE     validate a config file; prints every problem, exits 1 if any
  mcpgate keys generate [--alg ES256|RS256|EdDSA]
                                  print a new token-signing key (PKCS#8 PEM) and a store encryption key
  mcpgate --version | --help

Environment overrides: MCPGATE_LISTEN, MCPGATE_PUBLIC_URL, MCPGATE_LOG_LEVEL.
Docs: README.md and docs/ in the repository.`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
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
      let config;
      try {
        config = loadConfigFile(path);
      } catch (error) {
        if (error instanceof ConfigError) {
          process.stderr.write(`${error.message}\n`);
          return 1;
        }
        throw error;
      }
      if (command === 'check') {
        process.stdout.write(`${path}: ok (${config.upstreams.length} upstream${config.upstreams.length === 1 ? '' : 's'})\n`);
        return 0;
      }
      return serve(createApp(config), config.server.drainTimeout);
    }
    case 'keys':
      return keys(positionals[1], values.alg ?? 'ES256');
    default:
      process.stderr.write(`mcpgate: unknown command "${command}"\n\n${USAGE}\n`);
      return 2;
  }
}

/** `mcpgate keys generate`: key material for `authServer.signingKeys` and `storage.encryptionKeys` (DESIGN §8). */
function keys(subcommand: string | undefined, alg: string): number {
  if (subcommand !== 'generate') {
    process.stderr.write('usage: mcpgate keys generate [--alg ES256|RS256|EdDSA]\n');
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
  await app.listen();
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
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
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
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
