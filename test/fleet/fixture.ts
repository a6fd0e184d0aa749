/**
 * A fleet of gateway replicas as an operator runs it: several `createApp` instances with the same
 * configuration (`storage.kind: valkey`, one signing key, one store encryption key), each with
 * its own Valkey connections (store and event bus), on one `redis-server` started here. The
 * public URL is replica 0's address; tests send each request to the replica they choose (a
 * round-robin balancer without affinity, made deterministic).
 */
import { randomBytes } from 'node:crypto';
import { createApp, type App } from '../../src/app.ts';
import { createCookieCodec, deriveCookieKey, loginCookie } from '../../src/authserver/login/cookies.ts';
import { generateSigningKeyPem, generateStoreKey } from '../../src/authserver/tokens/keys.ts';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { parseConfig } from '../../src/config/load.ts';
import type { Store } from '../../src/store/port.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { refusingIdp, type AuthGateway } from '../authserver/fixture.ts';
import { freePort } from '../support/gateway.ts';
import { captureLogs, type LogCapture } from '../support/logs.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';

/** One replica. */
export interface Replica {
  app: App;
  /** Where it really listens. */
  url: string;
  logs: LogCapture;
  /** True once `close()` was called on it. */
  closed: boolean;
  close(): Promise<void>;
}

/** A running fleet. */
export interface Fleet {
  redis: RedisServer;
  replicas: Replica[];
  /** The public URL every replica is configured with (replica 0's address). */
  publicUrl: string;
  /** The store as the replicas see it (a connection of the test's own), with the same key prefix. */
  store: Store;
  /** For the login helpers of test/authserver/fixture.ts: our token endpoint is reached at the public URL. */
  gateway: Pick<AuthGateway, 'issuer' | 'stores' | 'now' | 'resource'>;
  /** Our login cookie for a user's session, as `/oauth/callback` sets it: `[name, value]`. */
  loginCookie(subject: string, sessionId: string): [string, string];
  /** `url` (under the public URL) rewritten to the replica's real address. */
  on(replica: number, url: string | URL): string;
  close(): Promise<void>;
}

/** Options of {@link startFleet}. */
export interface FleetOptions {
  replicas: number;
  upstreams: Array<{ name: string; url: string; auth?: Record<string, unknown> }>;
  /** `server.drainTimeout`. Default "2s". */
  drainTimeout?: string;
}

export async function startFleet(options: FleetOptions): Promise<Fleet> {
  const redis = await startRedis();
  const ports = await Promise.all(Array.from({ length: options.replicas }, () => freePort()));
  const publicUrl = `http://127.0.0.1:${ports[0]}`;
  const keyPrefix = `fleet${randomBytes(4).toString('hex')}:`;
  const storeKey = generateStoreKey();
  const pem = generateSigningKeyPem();
  const replicas: Replica[] = [];
  for (const port of ports) {
    const config = parseConfig(
      JSON.stringify({
        server: { listen: `127.0.0.1:${port}`, publicUrl, devMode: true, drainTimeout: options.drainTimeout ?? '2s' },
        idp: { issuer: 'http://127.0.0.1:9/unused', clientId: 'mcpgate' },
        authServer: { signingKeys: ['file:/keys/signing.pem'], accessTokenTtl: '1h' },
        storage: { kind: 'valkey', valkey: { url: redis.url, keyPrefix }, encryptionKeys: [{ id: 'k1', key: 'env:STORE_KEY' }] },
        upstreams: options.upstreams.map((u) => ({ name: u.name, url: u.url, auth: u.auth ?? { mode: 'none' } })),
      }),
      'fleet-config',
      { env: { STORE_KEY: storeKey }, readFile: () => pem },
    );
    const logs = captureLogs();
    const app = createApp(config, { logDestination: logs.destination, idpClient: refusingIdp });
    await app.listen({ host: '127.0.0.1', port });
    const replica: Replica = {
      app,
      url: `http://127.0.0.1:${port}`,
      logs,
      closed: false,
      close() {
        replica.closed = true;
        return app.close();
      },
    };
    replicas.push(replica);
  }
  const store = createValkeyStore({ url: redis.url, keyPrefix });
  const sealer = createSealer({ keys: [{ id: 'k1', key: Buffer.from(storeKey, 'base64') }] });
  const cookies = loginCookie(createCookieCodec({ key: deriveCookieKey({ encryptionKey: storeKey }).key, secure: false }));
  return {
    redis,
    replicas,
    publicUrl,
    store,
    gateway: { issuer: publicUrl, stores: createAuthStores({ store, sealer }), now: Date.now, resource: (name) => `${publicUrl}/${name}/mcp` },
    loginCookie: (subject, sessionId) => cookies.issue({ sub: subject, sid: sessionId }).split(';')[0]!.split(/=(.*)/s).slice(0, 2) as [string, string],
    on: (replica, url) => replicas[replica]!.url + String(url).slice(publicUrl.length),
    async close() {
      await Promise.all(replicas.filter((r) => !r.closed).map((r) => r.close()));
      await store.close();
      await redis.stop();
    },
  };
}
