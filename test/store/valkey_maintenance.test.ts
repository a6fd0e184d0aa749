/**
 * The maintenance side of the Valkey adapter that `mcpgate keys reseal` runs on, against real
 * redis-servers: the walk sees every value under the prefix (on every master of a three-node
 * cluster), never sets or other prefixes; the swap keeps the TTL and never overwrites a value a
 * serving replica rewrote meanwhile.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster, Redis } from 'iovalkey';
import { resealValues, type SealedValueSource } from '../../src/store/reseal.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createValkeyMaintenance } from '../../src/store/valkey_maintenance.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';

const k0 = { id: 'k0', key: randomBytes(32) };
const k1 = { id: 'k1', key: randomBytes(32) };

async function collect(source: SealedValueSource, walk: 'names' | 'setNames' = 'names'): Promise<string[]> {
  const names: string[] = [];
  for await (const batch of source[walk]()) names.push(...batch);
  return names.sort();
}

describe('valkey maintenance (standalone)', () => {
  let server: RedisServer;
  let raw: Redis;
  before(async () => {
    server = await startRedis();
    raw = new Redis(server.url);
  });
  after(async () => {
    raw?.disconnect();
    await server?.stop();
  });

  test('names: every plain value under the prefix, taken literally; no sets, no other prefixes; setNames: the sets', async () => {
    const prefix = 'odd*[pre]?:';
    await raw.set(`${prefix}a`, '1', 'PX', 60_000);
    await raw.set(`${prefix}b:{sid}`, '2', 'PX', 60_000);
    await raw.sadd(`${prefix}index`, 'x');
    await raw.set('oddX[pre]?:c', 'a glob would match this', 'PX', 60_000);
    await raw.set('other:a', 'another deployment', 'PX', 60_000);
    const source = await createValkeyMaintenance({ url: server.url, keyPrefix: prefix, scanCount: 1 });
    try {
      assert.deepEqual(await collect(source), ['a', 'b:{sid}']);
      assert.deepEqual(await collect(source, 'setNames'), ['index']);
    } finally {
      await source.close();
    }
  });

  test('replace: keeps the deadline; refuses a value changed meanwhile; reports one that is gone', async () => {
    const source = await createValkeyMaintenance({ url: server.url, keyPrefix: 'swap:' });
    try {
      await raw.set('swap:a', 'old', 'PX', 600_000);
      await sleep(50);
      const before = await raw.pttl('swap:a');
      assert.equal(await source.replace('a', 'old', 'new'), 'replaced');
      assert.equal(await raw.get('swap:a'), 'new');
      const pttl = await raw.pttl('swap:a');
      assert.ok(pttl > 0 && pttl <= before && pttl > before - 5_000, `TTL kept: ${pttl} ms, was ${before} ms`);

      assert.equal(await source.replace('a', 'old', 'stale'), 'changed');
      assert.equal(await raw.get('swap:a'), 'new', 'a concurrent write is never overwritten');
      await raw.sadd('swap:set', 'm');
      assert.equal(await source.replace('set', 'm', 'x'), 'changed', 'a set is never turned into a value');
      assert.equal(await source.replace('missing', 'old', 'new'), 'gone');
      assert.equal(await raw.exists('swap:missing'), 0, 'nothing is created');
    } finally {
      await source.close();
    }
  });

  test('reseal while a replica keeps writing: its value wins, counted as changed; once it writes under the new key, current', async () => {
    const prefix = 'busy:';
    const name = 'idp:{s1}';
    const old = createSealer({ keys: [k0] });
    const fresh = createSealer({ keys: [k1] });
    await raw.set(prefix + name, old.seal(name, 'v0'), 'PX', 60_000);
    const source = await createValkeyMaintenance({ url: server.url, keyPrefix: prefix });
    // A replica still on the old key rewrites the value between every read and swap.
    let writes = 0;
    const racing: SealedValueSource = {
      ...source,
      names: (signal) => source.names(signal),
      async get(n, signal) {
        const value = await source.get(n, signal);
        await raw.set(prefix + n, old.seal(n, `v${++writes}`), 'PX', 60_000);
        return value;
      },
    };
    try {
      const raced = await resealValues({ source: racing, keys: [k1, k0] });
      assert.equal(raced.changed, 1);
      assert.equal(raced.resealed, 0);
      assert.equal(old.open(name, (await raw.get(prefix + name))!), `v${writes}`, 'the replica’s last write is what is stored');

      // A replica on the new key writes once during the run: nothing to reseal after all.
      let once = false;
      const racingOnce: SealedValueSource = {
        ...racing,
        async get(n, signal) {
          const value = await source.get(n, signal);
          if (!once) await raw.set(prefix + n, fresh.seal(n, 'from a new replica'), 'KEEPTTL');
          once = true;
          return value;
        },
      };
      const settled = await resealValues({ source: racingOnce, keys: [k1, k0] });
      assert.deepEqual([settled.current, settled.changed, settled.resealed], [1, 0, 0]);
      assert.equal(fresh.open(name, (await raw.get(prefix + name))!), 'from a new replica');
    } finally {
      await source.close();
    }
  });
});

test('valkey maintenance (sentinel): the walk and the swap run on the master the Sentinel names', async () => {
  const master = await startRedis();
  const sentinel = await startRedis({ sentinelFor: { masterName: 'mtmaster', port: master.port } });
  const raw = new Redis(master.url);
  try {
    const name = 'utoken:{s1}:github';
    await raw.set(`sn:${name}`, createSealer({ keys: [k0] }).seal(name, 'row'), 'PX', 60_000);
    const source = await createValkeyMaintenance({ url: sentinel.url, sentinel: { masterName: 'mtmaster' }, keyPrefix: 'sn:' });
    try {
      const report = await resealValues({ source, keys: [k1, k0] });
      assert.deepEqual([report.scanned, report.resealed], [1, 1]);
    } finally {
      await source.close();
    }
    assert.equal(createSealer({ keys: [k1] }).open(name, (await raw.get(`sn:${name}`))!), 'row');
  } finally {
    raw.disconnect();
    await sentinel.stop();
    await master.stop();
  }
});

describe('valkey maintenance (three-master cluster)', () => {
  const servers: RedisServer[] = [];
  before(async () => {
    for (let i = 0; i < 3; i++) {
      servers.push(await startRedis({ args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-announce-ip', '127.0.0.1'] }));
    }
    const nodes = servers.map((s) => new Redis(s.url));
    try {
      const ranges = [['0', '5460'], ['5461', '10922'], ['10923', '16383']];
      for (const [i, node] of nodes.entries()) await node.call('CLUSTER', 'ADDSLOTSRANGE', ...ranges[i]!);
      for (const s of servers.slice(1)) await nodes[0]!.call('CLUSTER', 'MEET', '127.0.0.1', String(s.port));
      // Every node must know every other and see all slots covered.
      for (let i = 0; ; i++) {
        const infos = await Promise.all(nodes.map((n) => n.call('CLUSTER', 'INFO')));
        if (infos.every((info) => String(info).includes('cluster_state:ok') && String(info).includes('cluster_known_nodes:3'))) break;
        if (i > 500) throw new Error('the three-node cluster did not become ready');
        await sleep(20);
      }
    } finally {
      for (const n of nodes) n.disconnect();
    }
  });
  after(async () => {
    for (const s of servers) await s.stop();
  });

  test('the walk covers every master, and a reseal reaches values on all of them', async () => {
    const cluster = new Cluster([{ host: '127.0.0.1', port: servers[0]!.port }]);
    const prefix = 'fleet:';
    const old = createSealer({ keys: [k0] });
    const names = Array.from({ length: 60 }, (_, i) => `idp:{session-${i}}`);
    try {
      for (const name of names) await cluster.set(prefix + name, old.seal(name, `tokens of ${name}`), 'PX', 120_000);
      await cluster.sadd(`${prefix}user:alice:sessions`, 'session-1');
      // The keys really are spread: each master holds some of them.
      for (const s of servers) {
        const node = new Redis(s.url);
        try {
          assert.ok((await node.dbsize()) > 0, `node ${s.port} holds some keys`);
        } finally {
          node.disconnect();
        }
      }

      const source = await createValkeyMaintenance({ url: servers[1]!.url, cluster: {}, keyPrefix: prefix });
      try {
        assert.deepEqual(await collect(source), [...names].sort());
        assert.deepEqual(await collect(source, 'setNames'), ['user:alice:sessions']);
        const report = await resealValues({ source, keys: [k1, k0] });
        assert.deepEqual([report.scanned, report.resealed, report.unreadable, report.changed], [60, 60, 0, 0]);
      } finally {
        await source.close();
      }
      const fresh = createSealer({ keys: [k1] });
      for (const name of names) {
        const value = (await cluster.get(prefix + name))!;
        assert.match(value, /^v1\.k1\./);
        assert.equal(fresh.open(name, value), `tokens of ${name}`);
        assert.ok((await cluster.pttl(prefix + name)) > 0);
      }
    } finally {
      cluster.disconnect();
    }
  });
});
