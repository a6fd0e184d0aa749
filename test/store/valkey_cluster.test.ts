/**
 * The contract again, against a one-node Valkey cluster: cluster mode routes each command by its
 * key's hash slot, so multi-key calls and scripts must stay within one slot per command.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'iovalkey';
import { StoreUnavailableError } from '../../src/store/port.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { fleetSingleFlightContract } from '../credentials/fleet-single-flight.contract.ts';
import { storeContract } from './contract.ts';

let server: RedisServer;
let prefixes = 0;

before(async () => {
  server = await startRedis({
    args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-announce-ip', '127.0.0.1'],
  });
  const raw = new Redis(server.url);
  try {
    await raw.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    // A fresh master waits about two seconds before it declares the cluster ok.
    for (let i = 0; !String(await raw.call('CLUSTER', 'INFO')).includes('cluster_state:ok'); i++) {
      if (i > 250) throw new Error('the one-node cluster did not become ready');
      await sleep(20);
    }
  } finally {
    raw.disconnect();
  }
});
after(async () => {
  await server?.stop();
});

storeContract('valkey store (cluster)', async () => {
  const store = createValkeyStore({ url: server.url, cluster: {}, keyPrefix: `cluster${++prefixes}:`, commandTimeoutMs: 1000 });
  return { store, advance: (ms) => sleep(ms), cleanup: () => store.close() };
});

// The cross-replica single flight on a cluster: the lock and its release are one-key commands and scripts.
fleetSingleFlightContract('a Valkey cluster (two clients)', async () => {
  const prefix = `cluster-flight${++prefixes}:`;
  const a = createValkeyStore({ url: server.url, cluster: {}, keyPrefix: prefix, commandTimeoutMs: 1000 });
  const b = createValkeyStore({ url: server.url, cluster: {}, keyPrefix: prefix, commandTimeoutMs: 1000 });
  return { a, b, cleanup: async () => void (await Promise.all([a.close(), b.close()])) };
});

describe('valkey store (cluster) when the node goes away', () => {
  test('calls reject with StoreUnavailableError within the timeout', async () => {
    const store = createValkeyStore({ url: server.url, cluster: {}, keyPrefix: 'outage:', commandTimeoutMs: 300 });
    try {
      await store.set('k', 'v', 60_000);
      await server.stop();
      const start = performance.now();
      await assert.rejects(store.get('k'), StoreUnavailableError);
      await assert.rejects(store.delete(['k', 'j']), StoreUnavailableError);
      assert.ok(performance.now() - start < 1000);
    } finally {
      await store.close();
    }
  });
});
