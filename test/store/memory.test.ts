import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createMemoryStore } from '../../src/store/memory.ts';
import { storeContract } from './contract.ts';

/** A clock that moves only when told to. */
function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_700_000_000_000;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

storeContract('memory store', async () => {
  const clock = fakeClock();
  const store = createMemoryStore({ now: clock.now });
  return { store, advance: clock.advance, cleanup: () => store.close() };
});

describe('memory store bounds', () => {
  test('maxEntries must be a positive integer', () => {
    for (const maxEntries of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => createMemoryStore({ maxEntries }), TypeError);
    }
  });

  test('when full, the keys closest to expiring are evicted first', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ maxEntries: 3, now: clock.now });
    await store.set('refresh', 'r', 30_000);
    await store.set('code', 'c', 1_000);
    await store.addMembers('index', ['s1'], 20_000);
    await store.set('pending', 'p', 10_000);
    assert.equal(await store.get('code'), undefined);
    assert.equal(await store.get('refresh'), 'r');
    assert.equal(await store.get('pending'), 'p');
    assert.deepEqual(await store.members('index'), ['s1']);
    await store.set('another', 'a', 10_000);
    assert.equal(await store.get('pending'), undefined, 'the next soonest to expire goes next');
    assert.equal(await store.get('refresh'), 'r');
    await store.close();
  });

  test('expired keys are swept before anything live is evicted', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ maxEntries: 2, now: clock.now });
    await store.set('short', 's', 100);
    await store.set('long', 'l', 100_000);
    clock.advance(200);
    await store.set('new', 'n', 50);
    assert.equal(await store.get('long'), 'l');
    assert.equal(await store.get('new'), 'n');
    await store.close();
  });

  test('overwriting a key does not count it twice nor evict it', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ maxEntries: 2, now: clock.now });
    await store.set('a', '1', 1_000);
    await store.set('b', '1', 5_000);
    for (let i = 0; i < 5_000; i++) await store.set('a', String(i), 10_000 + i);
    assert.equal(await store.get('a'), '4999');
    assert.equal(await store.get('b'), '1');
    clock.advance(6_000);
    assert.equal(await store.get('b'), undefined);
    assert.equal(await store.get('a'), '4999');
    clock.advance(10_000);
    assert.equal(await store.get('a'), undefined);
    await store.close();
  });

  test('a set whose TTL was extended is judged by its new deadline', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ maxEntries: 2, now: clock.now });
    await store.addMembers('index', ['a'], 1_000);
    await store.set('value', 'v', 5_000);
    await store.addMembers('index', ['b'], 10_000);
    await store.set('third', 't', 8_000);
    assert.equal(await store.get('value'), undefined);
    assert.deepEqual((await store.members('index')).sort(), ['a', 'b']);
    await store.close();
  });

  // Security review item 3: a count bound alone let 100 000 registrations of 16 KiB (3 GiB as V8
  // strings) be held; the byte bound holds whatever the values' sizes.
  test('maxBytes bounds what large values hold: the soonest to expire are evicted, a value larger than the store is refused', async () => {
    assert.throws(() => createMemoryStore({ maxBytes: 0 }), TypeError);
    const clock = fakeClock();
    const maxBytes = 1024 * 1024;
    const store = createMemoryStore({ maxBytes, now: clock.now });
    const big = 'x'.repeat(16 * 1024);
    await store.set('refresh', 'r', 30 * 86_400_000);
    await store.addMembers('index', ['s1', 's2'], 30 * 86_400_000);
    // A flood of 16 KiB values: 32 KiB each as V8 keeps them, so at most ~32 fit in 1 MiB.
    for (let i = 0; i < 1000; i++) await store.set(`client:${i}`, big, 600_000 + i);
    let held = 0;
    for (let i = 0; i < 1000; i++) if ((await store.get(`client:${i}`)) !== undefined) held++;
    assert.ok(held > 0 && held <= 32, `held ${held} values of 16 KiB in 1 MiB`);
    assert.ok(await store.get('client:999'), 'the newest write is kept');
    assert.equal(await store.get('client:0'), undefined, 'the soonest to expire went first');
    assert.equal(await store.get('refresh'), 'r', 'long-lived keys survive the flood');
    assert.deepEqual((await store.members('index')).sort(), ['s1', 's2']);
    await assert.rejects(store.set('huge', 'x'.repeat(maxBytes), 1000), { name: 'StoreUnavailableError' });
    assert.equal(await store.get('huge'), undefined);
    await store.close();
  });

  test('growing a set counts against maxBytes; removing members frees their bytes', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ maxBytes: 64 * 1024, now: clock.now });
    await store.set('short', 's'.repeat(8 * 1024), 1_000);
    const member = (i: number): string => `${String(i).padStart(6, '0')}${'m'.repeat(250)}`;
    for (let i = 0; i < 100; i++) await store.addMembers('set', [member(i)], 60_000);
    assert.equal(await store.get('short'), undefined, 'the set grew past the bound: the key soonest to expire was evicted');
    assert.equal((await store.members('set')).length, 100);
    await store.removeMembers('set', Array.from({ length: 100 }, (_, i) => member(i)));
    for (let i = 0; i < 100; i++) await store.set(`v${i}`, 'y'.repeat(100), 60_000);
    for (let i = 0; i < 100; i++) assert.equal(await store.get(`v${i}`), 'y'.repeat(100), 'the freed bytes were reused');
    await store.close();
  });

  test('a lock taken and released many times frees its bytes: long-lived keys are never evicted for it', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ maxBytes: 10_000, now: clock.now });
    await store.set('refresh-token', 'r'.repeat(1000), 3_600_000);
    for (let i = 0; i < 200; i++) {
      assert.equal(await store.setIfAbsent('lock', `owner-${i}`.padEnd(500, '.'), 30_000), true);
      assert.equal(await store.deleteIfEquals('lock', `owner-${i}`.padEnd(500, '.')), true);
    }
    assert.equal(await store.get('refresh-token'), 'r'.repeat(1000));
    await store.close();
  });
});
