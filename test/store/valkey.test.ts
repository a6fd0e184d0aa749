import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'iovalkey';
import { StoreUnavailableError, type Store } from '../../src/store/port.ts';
import { createValkeyStore, type ValkeyStoreOptions } from '../../src/store/valkey.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { storeContract } from './contract.ts';

let server: RedisServer;
let prefixes = 0;

before(async () => {
  server = await startRedis();
});
after(async () => {
  await server?.stop();
});

/** A store on the shared test server with a prefix of its own, so tests never see each other's keys. */
function storeOn(url: string, options: Partial<ValkeyStoreOptions> = {}): Store {
  return createValkeyStore({ url, keyPrefix: `test${++prefixes}:`, commandTimeoutMs: 1000, ...options });
}

storeContract('valkey store', async () => {
  const store = storeOn(server.url);
  return { store, advance: (ms) => sleep(ms), cleanup: () => store.close() };
});

/** Runs `fn` and returns how long it took to settle, in milliseconds. */
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

/** Retries `fn` until it resolves or `ms` pass. */
async function eventually<T>(fn: () => Promise<T>, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(50);
    }
  }
}

describe('valkey store keys', () => {
  test('every key is written under the prefix, and prefixes isolate stores', async () => {
    const raw = new Redis(server.url);
    const a = createValkeyStore({ url: server.url, keyPrefix: 'tenant-a:' });
    const b = createValkeyStore({ url: server.url, keyPrefix: 'tenant-b:' });
    try {
      await a.set('k', 'from a', 60_000);
      await a.addMembers('{session1}:rows', ['r1'], 60_000);
      await a.compareAndSet('cas', undefined, 'x', 60_000);
      await b.set('k', 'from b', 60_000);
      assert.deepEqual((await raw.keys('tenant-a:*')).sort(), ['tenant-a:cas', 'tenant-a:k', 'tenant-a:{session1}:rows']);
      assert.equal(await raw.get('tenant-b:k'), 'from b');
      assert.equal(await raw.get('k'), null);
      assert.equal(await a.get('k'), 'from a');
      assert.equal(await b.take('k'), 'from b');
      assert.equal(await a.get('k'), 'from a');
      const ttl = await raw.pttl('tenant-a:{session1}:rows');
      assert.ok(ttl > 59_000 && ttl <= 60_000, `set TTL ${ttl}`);
    } finally {
      await Promise.all([a.close(), b.close()]);
      raw.disconnect();
    }
  });
});

describe('valkey store options', () => {
  test('bad options are refused when the store is created, without echoing secrets', () => {
    const bad: Partial<ValkeyStoreOptions>[] = [
      { url: 'http://user:hunter2@localhost:6379' },
      { url: 'not a url hunter2' },
      { url: 'redis://:hunter2@localhost:6379/db' },
      { keyPrefix: '{mcpgate}:' },
      { commandTimeoutMs: 0 },
      { connectTimeoutMs: -5 },
      { cluster: {}, sentinel: { masterName: 'm' } },
      { cluster: { nodes: ['no-port'] } },
      { url: 'redis://localhost/2', cluster: {} },
      { sentinel: { masterName: '' } },
    ];
    for (const options of bad) {
      assert.throws(
        () => createValkeyStore({ url: 'redis://localhost:6379', keyPrefix: 'p:', ...options }),
        (error: Error) => error instanceof TypeError && !error.message.includes('hunter2'),
        JSON.stringify(options),
      );
    }
  });
});

describe('valkey store when the server goes away', () => {
  let outage: RedisServer;
  before(async () => {
    outage = await startRedis();
  });
  after(async () => {
    await outage?.stop();
  });

  const commandTimeoutMs = 300;
  const every = (store: Store): Array<[string, () => Promise<unknown>]> => [
    ['get', () => store.get('k')],
    ['set', () => store.set('k', 'v', 60_000)],
    ['setIfAbsent', () => store.setIfAbsent('k', 'v', 60_000)],
    ['take', () => store.take('k')],
    ['delete', () => store.delete(['k', 'j'])],
    ['compareAndSet', () => store.compareAndSet('k', undefined, 'v', 60_000)],
    ['deleteIfEquals', () => store.deleteIfEquals('k', 'v')],
    ['addMembers', () => store.addMembers('s', ['a'], 60_000)],
    ['removeMembers', () => store.removeMembers('s', ['a'])],
    ['members', () => store.members('s')],
    ['ping', () => store.ping()],
  ];

  test('stopped: every call rejects with StoreUnavailableError within the timeout; restarted: calls work again', async () => {
    const store = storeOn(outage.url, { commandTimeoutMs });
    try {
      await store.set('k', 'v', 60_000);
      await outage.stop();
      // In parallel: each waits up to commandTimeoutMs for a reconnect before giving up.
      await Promise.all(
        every(store).map(async ([name, call]) => {
          const ms = await timed(() => assert.rejects(call(), StoreUnavailableError, name));
          assert.ok(ms < commandTimeoutMs + 200, `${name} took ${Math.round(ms)} ms`);
        }),
      );
      await outage.restart();
      await eventually(() => store.ping());
      await store.set('k', 'back', 60_000);
      assert.equal(await store.get('k'), 'back');
    } finally {
      await store.close();
    }
  });

  test('frozen (connected but silent): calls time out with StoreUnavailableError, then recover', async () => {
    const store = storeOn(outage.url, { commandTimeoutMs });
    try {
      await store.set('k', 'before', 60_000);
      outage.pause();
      const ms = await timed(() =>
        assert.rejects(store.get('k'), (error: Error) => error instanceof StoreUnavailableError && /timed out/.test(error.message)),
      );
      assert.ok(ms >= commandTimeoutMs - 20 && ms < commandTimeoutMs + 200, `took ${Math.round(ms)} ms`);
      outage.resume();
      assert.equal(await eventually(() => store.get('k')), 'before');
    } finally {
      outage.resume();
      await store.close();
    }
  });

  test('frozen: calls started at different times each time out a command timeout after their own start', async () => {
    const store = storeOn(outage.url, { commandTimeoutMs });
    try {
      await store.ping();
      outage.pause();
      const first = timed(() => assert.rejects(store.get('a'), StoreUnavailableError));
      // Half a timeout later: the second's deadline falls between the first's and twice it.
      await new Promise((resolve) => setTimeout(resolve, commandTimeoutMs / 2));
      const second = timed(() => assert.rejects(store.get('b'), StoreUnavailableError));
      for (const ms of await Promise.all([first, second])) {
        assert.ok(ms >= commandTimeoutMs - 20 && ms < commandTimeoutMs + 200, `took ${Math.round(ms)} ms`);
      }
    } finally {
      outage.resume();
      await store.close();
    }
  });

  test('an abort while waiting rejects with the abort reason, not as an outage', async () => {
    const store = storeOn(outage.url, { commandTimeoutMs: 5000 });
    try {
      await store.ping();
      outage.pause();
      const reason = new Error('request finished');
      const ms = await timed(() => assert.rejects(store.get('k', abortAfter(50, reason)), (error) => error === reason));
      assert.ok(ms < 1000, `took ${Math.round(ms)} ms`);
    } finally {
      outage.resume();
      await store.close();
    }
  });

  test('created while the server is down: fails fast, then works once it is up', async () => {
    await outage.stop();
    const store = storeOn(outage.url, { commandTimeoutMs });
    try {
      const ms = await timed(() => assert.rejects(store.set('ghost', 'written late', 60_000), StoreUnavailableError));
      assert.ok(ms < commandTimeoutMs + 200, `took ${Math.round(ms)} ms`);
      await outage.restart();
      await eventually(() => store.ping());
      assert.equal(await store.get('ghost'), undefined, 'a call that failed must not run once the server is back');
    } finally {
      await store.close();
    }
  });
});

/** A signal that aborts with `reason` after `ms`. */
function abortAfter(ms: number, reason: Error): AbortSignal {
  const controller = new AbortController();
  setTimeout(() => controller.abort(reason), ms);
  return controller.signal;
}
