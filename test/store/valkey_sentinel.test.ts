/**
 * Sentinel mode: the store asks a Sentinel where the master is, then talks to the master.
 * The contract itself runs against standalone and cluster; this checks the wiring and outages.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { StoreUnavailableError } from '../../src/store/port.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { fleetSingleFlightContract } from '../credentials/fleet-single-flight.contract.ts';

let master: RedisServer;
let sentinel: RedisServer;

before(async () => {
  master = await startRedis();
  sentinel = await startRedis({ sentinelFor: { masterName: 'mymaster', port: master.port } });
});
after(async () => {
  await sentinel?.stop();
  await master?.stop();
});

test('a store found through a Sentinel works, fails fast when the master is down, and recovers', async () => {
  const store = createValkeyStore({
    url: sentinel.url,
    sentinel: { masterName: 'mymaster' },
    keyPrefix: 'sentinel:',
    commandTimeoutMs: 300,
  });
  try {
    await store.set('k', 'v', 60_000);
    assert.equal(await store.take('k'), 'v');
    await store.addMembers('s', ['a'], 60_000);
    assert.deepEqual(await store.members('s'), ['a']);

    await master.stop();
    await assert.rejects(store.get('k'), StoreUnavailableError);

    await master.restart();
    for (let i = 0; ; i++) {
      try {
        await store.ping();
        break;
      } catch (error) {
        if (i > 100) throw error;
        await sleep(50);
      }
    }
    await store.set('k', 'back', 60_000);
    assert.equal(await store.get('k'), 'back');
  } finally {
    await store.close();
  }
});

// The cross-replica single flight with both replicas finding the master through the Sentinel.
fleetSingleFlightContract('a Sentinel-monitored master (two clients)', async () => {
  const open = () => createValkeyStore({ url: sentinel.url, sentinel: { masterName: 'mymaster' }, keyPrefix: 'sentinel-flight:', commandTimeoutMs: 1000 });
  const a = open();
  const b = open();
  return { a, b, cleanup: async () => void (await Promise.all([a.close(), b.close()])) };
});
