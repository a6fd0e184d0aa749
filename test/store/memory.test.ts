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
});
