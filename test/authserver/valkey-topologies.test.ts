/**
 * `storage.valkey` beyond one plain server, as the gateway builds its own store from the config:
 * a master found through a Sentinel, a cluster from its seed nodes, and TLS with a private CA,
 * a client certificate and a server name (real redis-servers, certificates made by openssl here).
 * Each serves a login (code exchange), a refresh and the gateway path.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'iovalkey';
import { createApp } from '../../src/app.ts';
import { generateSigningKeyPem, generateStoreKey } from '../../src/authserver/tokens/keys.ts';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { valkeyStoreOptions } from '../../src/store/valkey_settings.ts';
import { freePort } from '../support/gateway.ts';
import { captureLogs } from '../support/logs.ts';
import { startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { login, postForm, refusingIdp, registerClient, type AuthGateway } from './fixture.ts';

let upstream: RawUpstream;
let dir: string;
const servers: RedisServer[] = [];

before(async () => {
  upstream = await startRawUpstream();
  dir = mkdtempSync(join(tmpdir(), 'mcpgate-topologies-'));
});
after(async () => {
  await upstream?.close();
  for (const s of servers.reverse()) await s.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A gateway whose store is the one `storage.valkey` (given as YAML flow text) describes. */
async function startGatewayOn(valkey: string): Promise<AuthGateway & { ready(): Promise<number> }> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const storeKey = generateStoreKey();
  writeFileSync(join(dir, 'signing.pem'), generateSigningKeyPem());
  const config = parseConfig(
    [
      `server: { listen: "127.0.0.1:${port}", publicUrl: "${issuer}", devMode: true, drainTimeout: "1s" }`,
      'idp: { issuer: "http://127.0.0.1:9/unused", clientId: mcpgate }',
      `authServer: { signingKeys: ["file:${join(dir, 'signing.pem')}"] }`,
      `storage: { kind: valkey, valkey: ${valkey}, encryptionKeys: [{ id: k1, key: "env:STORE_KEY" }] }`,
      `upstreams: [{ name: kube, url: "${upstream.url}" }]`,
    ].join('\n'),
    'topology.yaml',
    { env: { STORE_KEY: storeKey }, readFile: (path) => readFileSync(path, 'utf8') },
  );
  const app = createApp(config, { logDestination: captureLogs().destination, idpClient: refusingIdp });
  const url = await app.listen({ host: '127.0.0.1', port });
  // The test seeds what /oauth/callback would leave behind through the same settings.
  const store = createValkeyStore(valkeyStoreOptions(config.storage.valkey!));
  return {
    app,
    url,
    issuer,
    resource: (name) => `${issuer}/${name}/mcp`,
    store,
    stores: createAuthStores({ store, sealer: createSealer({ keys: [{ id: 'k1', key: Buffer.from(storeKey, 'base64') }] }) }),
    now: Date.now,
    advance: () => assert.fail('real clock'),
    logs: captureLogs(),
    async ready() {
      return (await fetch(`${url}readyz`)).status;
    },
    async close() {
      await app.close();
      await store.close();
    },
  };
}

/** Login, refresh and an MCP call through the gateway: each needs the app's own store. */
async function servesLogins(gw: AuthGateway): Promise<void> {
  const client = await registerClient(gw);
  const tokens = await login(gw, client, { resource: gw.resource('kube') });
  const refreshed = await postForm(`${gw.issuer}/oauth/token`, { grant_type: 'refresh_token', client_id: client.clientId, refresh_token: tokens.refreshToken });
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  const res = await fetch(`${gw.url}kube/mcp`, {
    method: 'POST',
    headers: { authorization: `Bearer ${String(refreshed.body.access_token)}`, 'content-type': 'application/json', accept: 'application/json' },
    body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
  });
  await res.arrayBuffer();
  assert.equal(res.status, 200);
}

async function waitReady(gw: { ready(): Promise<number> }): Promise<void> {
  for (let i = 0; (await gw.ready()) !== 200; i++) {
    if (i > 100) assert.fail('/readyz did not turn 200');
    await sleep(50);
  }
}

describe('storage.valkey topologies', () => {
  test('sentinel: the master is found through the Sentinel named in the config', async () => {
    const master = await startRedis();
    servers.push(master);
    const sentinel = await startRedis({ sentinelFor: { masterName: 'gwmaster', port: master.port } });
    servers.push(sentinel);
    const gw = await startGatewayOn(`{ sentinel: { masterName: gwmaster, nodes: ["127.0.0.1:${sentinel.port}"] }, keyPrefix: "sentinel:" }`);
    try {
      await waitReady(gw);
      await servesLogins(gw);
      const raw = new Redis(master.url);
      try {
        assert.ok((await raw.keys('sentinel:session:*')).length > 0, 'the session lives on the master');
      } finally {
        raw.disconnect();
      }
    } finally {
      await gw.close();
    }
  });

  test('cluster: the store is built from the seed nodes', async () => {
    const node = await startRedis({ args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-announce-ip', '127.0.0.1'] });
    servers.push(node);
    const raw = new Redis(node.url);
    try {
      await raw.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
      for (let i = 0; !String(await raw.call('CLUSTER', 'INFO')).includes('cluster_state:ok'); i++) {
        if (i > 250) throw new Error('the one-node cluster did not become ready');
        await sleep(20);
      }
      const gw = await startGatewayOn(`{ cluster: { nodes: ["127.0.0.1:${node.port}"] }, keyPrefix: "cl:" }`);
      try {
        await waitReady(gw);
        await servesLogins(gw);
        assert.ok((await raw.keys('cl:session:*')).length > 0);
      } finally {
        await gw.close();
      }
    } finally {
      raw.disconnect();
    }
  });

  describe('tls', () => {
    let tlsPort: number;
    let tlsDir: string;
    before(async () => {
      tlsDir = mkdtempSync(join(tmpdir(), 'mcpgate-tls-'));
      makeCertificates(tlsDir);
      tlsPort = await freePort();
      // Client certificates required: a connection without ours is refused by the server.
      servers.push(
        await startRedis({
          args: [
            '--tls-port', String(tlsPort),
            '--tls-cert-file', join(tlsDir, 'server.crt'),
            '--tls-key-file', join(tlsDir, 'server.key'),
            '--tls-ca-cert-file', join(tlsDir, 'ca.crt'),
            '--tls-auth-clients', 'yes',
          ],
        }),
      );
    });
    after(() => {
      if (tlsDir) rmSync(tlsDir, { recursive: true, force: true });
    });

    const tls = (fields: string) => `{ url: "rediss://127.0.0.1:${tlsPort}/0", keyPrefix: "tls:", tls: { ${fields} } }`;
    const ca = () => `ca: "file:${join(tlsDir, 'ca.crt')}"`;
    const client = () => `cert: "file:${join(tlsDir, 'client.crt')}", key: "file:${join(tlsDir, 'client.key')}"`;

    test('CA, client certificate and server name reach the connection: logins work over TLS', async () => {
      const gw = await startGatewayOn(tls(`${ca()}, ${client()}, serverName: valkey.test`));
      try {
        await waitReady(gw);
        await servesLogins(gw);
      } finally {
        await gw.close();
      }
    });

    for (const [what, fields] of [
      ['without the client certificate the server refuses the connection', () => `${ca()}, serverName: valkey.test`],
      ['without the private CA the server certificate is not trusted', () => `${client()}, serverName: valkey.test`],
      ['without the server name the certificate (issued to valkey.test) does not match 127.0.0.1', () => `${ca()}, ${client()}`],
    ] as const) {
      test(`${what}: /readyz fails`, async () => {
        const gw = await startGatewayOn(tls(fields()));
        try {
          await sleep(300);
          assert.equal(await gw.ready(), 503);
        } finally {
          await gw.close();
        }
      });
    }
  });
});

/** A private CA, a server certificate for `valkey.test` and a client certificate, all P-256. */
function makeCertificates(at: string): void {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: at, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=mcpgate test CA');
  writeFileSync(join(at, 'server.ext'), 'subjectAltName=DNS:valkey.test\n');
  writeFileSync(join(at, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const name of ['server', 'client']) {
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name === 'server' ? 'valkey.test' : 'mcpgate'}`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', '-extfile', `${name}.ext`);
  }
}
