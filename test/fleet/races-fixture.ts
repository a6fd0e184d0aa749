/**
 * Two gateway replicas as an operator runs them: two `createApp` instances with the same config
 * (`storage.kind: valkey` on one redis-server, one signing key, one store encryption key, one
 * public URL), each with its own Valkey client, and no affinity: the test spreads requests over
 * both. The test seeds logins through its own client of the same store, as `/oauth/callback`
 * leaves them. A third replica can be started as its own process (`mcpgate serve` with the same
 * configuration in a file), for a test that kills it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp, type App } from '../../src/app.ts';
import { generateSigningKeyPem, generateStoreKey } from '../../src/authserver/tokens/keys.ts';
import type { AuthStores, IdpTokens } from '../../src/authserver/records/records.ts';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { parseConfig } from '../../src/config/load.ts';
import type { Store } from '../../src/store/port.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { createUpstreamStores, type UpstreamStores } from '../../src/upstream-oauth/stores.ts';
import { login, registerClient, type AuthGateway } from '../authserver/fixture.ts';
import { freePort } from '../support/gateway.ts';
import type { DevIdp } from '../support/idp.ts';
import { captureLogs, type LogCapture } from '../support/logs.ts';
import { waitFor } from '../support/mcp-upstream.ts';

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

/** Options of {@link startFleet}. */
export interface FleetOptions {
  /** The redis-server both replicas share. */
  valkeyUrl: string;
  idp: DevIdp;
  upstreams: Array<{ name: string; url: string | URL; auth: Record<string, unknown> }>;
  /** The public URL (our issuer) both replicas are configured with. Default: replica A's address. */
  publicUrl?: string;
  /** Environment the config's `env:` references read, besides the store key and the IdP secret. */
  env?: Record<string, string>;
}

/** Two running replicas and the test's own view of their shared store. */
export interface Fleet {
  /** Where each replica listens. */
  bases: [string, string];
  /** The one public URL (our issuer) both are configured with: replica A's address, unless given (a balancer's). */
  publicUrl: string;
  apps: [App, App];
  logs: [LogCapture, LogCapture];
  /** The test's own client of the shared store (same key prefix). */
  store: Store;
  keyPrefix: string;
  stores: AuthStores;
  upstreamStores: UpstreamStores;
  /** A session for `subject` (holding `idpTokens`) and our tokens for `resource`, through replica A's token endpoint. */
  login(options: { subject: string; resource: string; idpTokens?: IdpTokens }): Promise<{ accessToken: string; refreshToken: string; sessionId: string }>;
  /** Starts one more replica with the same configuration, as a child process running `mcpgate serve`; resolves once it listens. */
  spawnReplica(): Promise<ProcessReplica>;
  close(): Promise<void>;
}

/** A replica running in its own process. */
export interface ProcessReplica {
  url: string;
  process: ChildProcess;
  /** What it wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  exited: Promise<number | string | null>;
}

/** Starts two replicas on free loopback ports. */
export async function startFleet(options: FleetOptions): Promise<Fleet> {
  const ports = [await freePort(), await freePort()] as const;
  const bases: [string, string] = [`http://127.0.0.1:${ports[0]}`, `http://127.0.0.1:${ports[1]}`];
  const publicUrl = options.publicUrl ?? bases[0];
  const keyPrefix = `fleet${randomBytes(4).toString('hex')}:`;
  const storeKey = generateStoreKey();
  const pem = generateSigningKeyPem();
  const env = { ...options.env, STORE_KEY: storeKey, IDP_SECRET: options.idp.clientSecret };
  /** The configuration every replica gets, as its file would hold it (JSON is YAML). */
  const configText = (port: number, signingKeyPath: string) =>
    JSON.stringify({
      server: { listen: `127.0.0.1:${port}`, publicUrl, devMode: true, drainTimeout: '1s' },
      idp: { issuer: options.idp.issuer, clientId: options.idp.clientId, clientSecret: 'env:IDP_SECRET' },
      authServer: { signingKeys: [`file:${signingKeyPath}`] },
      storage: { kind: 'valkey', valkey: { url: options.valkeyUrl, keyPrefix }, encryptionKeys: [{ id: 'k1', key: 'env:STORE_KEY' }] },
      upstreams: options.upstreams.map((u) => ({ name: u.name, url: String(u.url), auth: u.auth })),
    });
  const configFor = (port: number) =>
    parseConfig(
      configText(port, '/keys/signing.pem'),
      'fleet-config',
      {
        env,
        readFile: (path) => {
          if (path !== '/keys/signing.pem') throw Object.assign(new Error(`no such file ${path}`), { code: 'ENOENT' });
          return pem;
        },
      },
    );
  const logs: [LogCapture, LogCapture] = [captureLogs(), captureLogs()];
  const apps: [App, App] = [
    createApp(configFor(ports[0]), { logDestination: logs[0].destination }),
    createApp(configFor(ports[1]), { logDestination: logs[1].destination }),
  ];
  await apps[0].listen({ host: '127.0.0.1', port: ports[0] });
  await apps[1].listen({ host: '127.0.0.1', port: ports[1] });

  const store = createValkeyStore({ url: options.valkeyUrl, keyPrefix });
  const sealer = createSealer({ keys: [{ id: 'k1', key: Buffer.from(storeKey, 'base64') }] });
  const stores = createAuthStores({ store, sealer });
  const upstreamStores = createUpstreamStores({ store, sealer });
  const children: ChildProcess[] = [];
  let dir: string | undefined;
  // The fixture's helpers need only these three of an AuthGateway.
  const seeder = { issuer: publicUrl, stores, now: Date.now } as unknown as AuthGateway;

  return {
    bases,
    publicUrl,
    apps,
    logs,
    store,
    keyPrefix,
    stores,
    upstreamStores,
    async login({ subject, resource, idpTokens }) {
      const client = await registerClient(seeder);
      return login(seeder, client, { resource, subject, idpTokens });
    },
    async spawnReplica() {
      dir ??= mkdtempSync(join(tmpdir(), 'mcpgate-fleet-'));
      const port = await freePort();
      writeFileSync(join(dir, 'signing.pem'), pem, { mode: 0o600 });
      const path = join(dir, `replica-${port}.yaml`);
      writeFileSync(path, configText(port, join(dir, 'signing.pem')));
      const child = spawn(process.execPath, [CLI, 'serve', '--config', path], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      let output = '';
      child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
      child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
      const exited = new Promise<number | string | null>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
      await waitFor(() => output.includes('"msg":"listening"') || child.exitCode !== null, 'the replica process to listen', 15_000);
      if (!output.includes('"msg":"listening"')) throw new Error(`the replica process did not start:\n${output}`);
      return { url: `http://127.0.0.1:${port}`, process: child, output: () => output, exited };
    },
    async close() {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await Promise.all(apps.map((app) => app.close()));
      await store.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
