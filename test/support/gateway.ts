/**
 * The real gateway for tests: `createApp` with a config built from the given upstreams,
 * listening on a free loopback port, its log lines captured.
 */
import { createServer } from 'node:net';
import { createApp, type App } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import type { Store } from '../../src/store/port.ts';
import { captureLogs, type LogCapture } from './logs.ts';

/** Options of {@link startGateway}. */
export interface TestGatewayOptions {
  /** `upstreams:` entries as in the YAML file (`auth` defaults to mode none). */
  upstreams: Array<{ name: string; url: string | URL; auth?: Record<string, unknown> }>;
  /** Extra `server:` keys (`listen` and `publicUrl` are set here; `devMode` defaults to true, `drainTimeout` to 2s). */
  server?: Record<string, unknown>;
  /** The environment `env:` references resolve against (never the process's). */
  env?: Record<string, string>;
  /** Files `file:` references resolve against, by path. */
  files?: Record<string, string>;
  /**
   * The company IdP (e.g. the dev IdP): adds the `idp:` section, its secret passed by `env:`.
   * Any other `idp:` keys (`kind: oauth2` and its endpoints, `userClaim`) go in `extra`.
   */
  idp?: { issuer?: string; clientId: string; clientSecret: string; extra?: Record<string, unknown> };
  /** Extra `idp:` keys (e.g. `userClaim`), as `idp.extra`. */
  idpExtra?: Record<string, unknown>;
  /** The `log:` section. */
  log?: Record<string, unknown>;
  /** The store encryption key (32 bytes): adds `storage.encryptionKeys`, so tests can open what the app sealed. */
  storeKey?: Buffer;
  /** The storage backend handed to `createApp` (default: the one the config names). */
  store?: Store;
  /** `authServer:` keys (e.g. `signingKeys` by `file:` reference, so replicas share a key). */
  authServer?: Record<string, unknown>;
  /** The `observability:` section (e.g. `{ otlp: { endpoint } }`). */
  observability?: Record<string, unknown>;
}

/** A running gateway. */
export interface TestGateway {
  app: App;
  /** `http://127.0.0.1:<port>`, which is also the configured public URL. */
  url: URL;
  /** The gateway path of an upstream: `<url>/<name>/mcp`. */
  mcpUrl(name: string): URL;
  logs: LogCapture;
  close(): Promise<void>;
}

/** A TCP port free on loopback right now (bound and released). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, host, () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/** Validates the config exactly as `mcpgate serve` would, then starts the gateway. */
export async function startGateway(options: TestGatewayOptions): Promise<TestGateway> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = { ...options.env };
  const raw: Record<string, unknown> = {
    server: { listen: `127.0.0.1:${port}`, publicUrl: base, devMode: true, drainTimeout: '2s', ...options.server },
    upstreams: options.upstreams.map((u) => ({ name: u.name, url: String(u.url), auth: u.auth ?? { mode: 'none' } })),
  };
  if (options.idp) {
    raw.idp = { issuer: options.idp.issuer, clientId: options.idp.clientId, clientSecret: 'env:TEST_IDP_SECRET', ...options.idpExtra, ...options.idp.extra };
    env.TEST_IDP_SECRET = options.idp.clientSecret;
  }
  if (options.authServer) raw.authServer = options.authServer;
  if (options.log) raw.log = options.log;
  if (options.observability) raw.observability = options.observability;
  if (options.storeKey) {
    raw.storage = { kind: 'memory', encryptionKeys: [{ id: 'k1', key: 'env:TEST_STORE_KEY' }] };
    env.TEST_STORE_KEY = options.storeKey.toString('base64');
  }
  const files = options.files ?? {};
  const config = parseConfig(JSON.stringify(raw), 'test-config', {
    env,
    readFile(path) {
      if (!(path in files)) throw Object.assign(new Error(`no such file ${path}`), { code: 'ENOENT' });
      return files[path]!;
    },
  });
  const logs = captureLogs();
  const app = createApp(config, { logDestination: logs.destination, store: options.store });
  const url = await app.listen({ host: '127.0.0.1', port });
  return {
    app,
    url,
    mcpUrl: (name) => new URL(`/${name}/mcp`, url),
    logs,
    close: () => app.close(),
  };
}
