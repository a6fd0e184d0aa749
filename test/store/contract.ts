/**
 * The one contract every storage backend must meet: each adapter's
 * test file calls `storeContract` with a factory, so memory and Valkey are held to the same tests.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { StoreUnavailableError, type Store } from '../../src/store/port.ts';

/** What a backend's test file provides: a fresh, empty store per test and a way to let time pass. */
export interface StoreFixture {
  store: Store;
  /** Lets `ms` milliseconds pass for TTL purposes (a fake clock, or a real sleep for Valkey). */
  advance(ms: number): Promise<void> | void;
  /** Closes the store and anything else the fixture opened (it may already be closed). */
  cleanup(): Promise<void>;
}

/** A TTL short enough to wait out in real time, long enough to still be alive right after a write. */
const SHORT = 150;
/** Comfortably past SHORT. */
const PAST_SHORT = 300;
const LONG = 60_000;
const PARALLEL = 20;

/** Registers the contract suite for one backend. `makeStore` is called once per test. */
export function storeContract(name: string, makeStore: () => Promise<StoreFixture>): void {
  describe(`${name} meets the Store contract`, () => {
    let fixture: StoreFixture;
    let store: Store;
    const advance = async (ms: number): Promise<void> => fixture.advance(ms);

    beforeEach(async () => {
      fixture = await makeStore();
      store = fixture.store;
    });
    afterEach(async () => {
      await fixture.cleanup();
    });

    describe('get and set', () => {
      test('a missing key reads as undefined', async () => {
        assert.equal(await store.get('missing'), undefined);
      });

      test('set stores, and a second set replaces', async () => {
        await store.set('a', 'one', LONG);
        assert.equal(await store.get('a'), 'one');
        await store.set('a', 'two', LONG);
        assert.equal(await store.get('a'), 'two');
      });

      test('values round-trip exactly: empty, unicode, separators, large', async () => {
        const values = ['', 'héllo wörld ✓ 🔑', 'a.b:c{d}\r\n\t"\'\\', 'x'.repeat(100_000)];
        for (const [i, value] of values.entries()) {
          await store.set(`v${i}`, value, LONG);
          assert.equal(await store.get(`v${i}`), value);
        }
      });

      test('a value expires after its TTL', async () => {
        await store.set('a', 'one', SHORT);
        assert.equal(await store.get('a'), 'one');
        await advance(PAST_SHORT);
        assert.equal(await store.get('a'), undefined);
      });

      test('set again resets the TTL', async () => {
        await store.set('a', 'one', SHORT);
        await store.set('a', 'two', LONG);
        await advance(PAST_SHORT);
        assert.equal(await store.get('a'), 'two');
      });

      test('TTLs must be positive integers, and keys non-empty', async () => {
        for (const ttl of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
          await assert.rejects(store.set('a', 'x', ttl), TypeError, `ttl ${ttl}`);
          await assert.rejects(store.setIfAbsent('a', 'x', ttl), TypeError);
          await assert.rejects(store.compareAndSet('a', undefined, 'x', ttl), TypeError);
          await assert.rejects(store.addMembers('a', ['x'], ttl), TypeError);
        }
        await assert.rejects(store.get(''), TypeError);
        await assert.rejects(store.set('', 'x', LONG), TypeError);
        assert.equal(await store.get('a'), undefined);
      });
    });

    describe('setIfAbsent', () => {
      test('stores only when absent, and again once the value expired', async () => {
        assert.equal(await store.setIfAbsent('lock', 'first', SHORT), true);
        assert.equal(await store.setIfAbsent('lock', 'second', SHORT), false);
        assert.equal(await store.get('lock'), 'first');
        await advance(PAST_SHORT);
        assert.equal(await store.setIfAbsent('lock', 'third', LONG), true);
        assert.equal(await store.get('lock'), 'third');
      });

      test(`exactly one of ${PARALLEL} concurrent callers wins`, async () => {
        const results = await Promise.all(
          Array.from({ length: PARALLEL }, (_, i) => store.setIfAbsent('lock', `caller-${i}`, LONG)),
        );
        const winners = results.flatMap((won, i) => (won ? [i] : []));
        assert.equal(winners.length, 1);
        assert.equal(await store.get('lock'), `caller-${winners[0]}`);
      });
    });

    describe('take', () => {
      test('returns the value once and deletes it', async () => {
        await store.set('code', 'abc', LONG);
        assert.equal(await store.take('code'), 'abc');
        assert.equal(await store.take('code'), undefined);
        assert.equal(await store.get('code'), undefined);
      });

      test('a missing or expired key yields undefined', async () => {
        assert.equal(await store.take('missing'), undefined);
        await store.set('code', 'abc', SHORT);
        await advance(PAST_SHORT);
        assert.equal(await store.take('code'), undefined);
      });

      test('an empty value is still a value', async () => {
        await store.set('code', '', LONG);
        assert.equal(await store.take('code'), '');
      });

      test(`exactly one of ${PARALLEL} concurrent takes receives the value`, async () => {
        await store.set('code', 'single-use', LONG);
        const results = await Promise.all(Array.from({ length: PARALLEL }, () => store.take('code')));
        assert.deepEqual(results.filter((r) => r !== undefined), ['single-use']);
      });
    });

    describe('delete', () => {
      test('deletes one key, several keys, sets; missing keys and [] are fine', async () => {
        await store.set('a', '1', LONG);
        await store.set('b', '2', LONG);
        await store.set('c', '3', LONG);
        await store.addMembers('s', ['m'], LONG);
        await store.delete('a');
        assert.equal(await store.get('a'), undefined);
        await store.delete(['b', 's', 'missing']);
        assert.equal(await store.get('b'), undefined);
        assert.deepEqual(await store.members('s'), []);
        assert.equal(await store.get('c'), '3');
        await store.delete([]);
        await store.delete('missing');
        assert.equal(await store.get('c'), '3');
      });
    });

    describe('compareAndSet', () => {
      test('expected undefined: swaps only when absent', async () => {
        assert.equal(await store.compareAndSet('k', undefined, 'v1', LONG), true);
        assert.equal(await store.get('k'), 'v1');
        assert.equal(await store.compareAndSet('k', undefined, 'v2', LONG), false);
        assert.equal(await store.get('k'), 'v1');
      });

      test('expected value: swaps only on an exact match', async () => {
        await store.set('k', 'v1', LONG);
        assert.equal(await store.compareAndSet('k', 'other', 'v2', LONG), false);
        assert.equal(await store.compareAndSet('k', 'v', 'v2', LONG), false);
        assert.equal(await store.get('k'), 'v1');
        assert.equal(await store.compareAndSet('k', 'v1', 'v2', LONG), true);
        assert.equal(await store.get('k'), 'v2');
        assert.equal(await store.compareAndSet('missing', 'v1', 'v2', LONG), false);
        assert.equal(await store.get('missing'), undefined);
      });

      test('an empty value is not the same as no value', async () => {
        await store.set('k', '', LONG);
        assert.equal(await store.compareAndSet('k', undefined, 'x', LONG), false);
        assert.equal(await store.compareAndSet('k', '', 'x', LONG), true);
        assert.equal(await store.get('k'), 'x');
      });

      test('an expired value counts as absent', async () => {
        await store.set('k', 'old', SHORT);
        await advance(PAST_SHORT);
        assert.equal(await store.compareAndSet('k', 'old', 'new', LONG), false);
        assert.equal(await store.compareAndSet('k', undefined, 'new', LONG), true);
        assert.equal(await store.get('k'), 'new');
      });

      test('the TTL is reset to ttlMs, shorter or longer', async () => {
        await store.set('short', 'v1', LONG);
        assert.equal(await store.compareAndSet('short', 'v1', 'v2', SHORT), true);
        await store.set('long', 'v1', SHORT);
        assert.equal(await store.compareAndSet('long', 'v1', 'v2', LONG), true);
        await advance(PAST_SHORT);
        assert.equal(await store.get('short'), undefined);
        assert.equal(await store.get('long'), 'v2');
      });

      test(`exactly one of ${PARALLEL} racing swaps from the same value wins`, async () => {
        await store.set('family', 'generation-0', LONG);
        const results = await Promise.all(
          Array.from({ length: PARALLEL }, (_, i) => store.compareAndSet('family', 'generation-0', `winner-${i}`, LONG)),
        );
        const winners = results.flatMap((won, i) => (won ? [i] : []));
        assert.equal(winners.length, 1);
        assert.equal(await store.get('family'), `winner-${winners[0]}`);
      });
    });

    describe('deleteIfEquals', () => {
      test('deletes only on an exact match; a missing or expired key is not deleted', async () => {
        await store.set('lock', 'owner-1', LONG);
        assert.equal(await store.deleteIfEquals('lock', 'owner-2'), false);
        assert.equal(await store.deleteIfEquals('lock', 'owner'), false);
        assert.equal(await store.get('lock'), 'owner-1');
        assert.equal(await store.deleteIfEquals('lock', 'owner-1'), true);
        assert.equal(await store.get('lock'), undefined);
        assert.equal(await store.deleteIfEquals('lock', 'owner-1'), false);
        await store.set('gone', 'owner-1', SHORT);
        await advance(PAST_SHORT);
        assert.equal(await store.deleteIfEquals('gone', 'owner-1'), false);
        assert.equal(await store.setIfAbsent('gone', 'owner-2', LONG), true);
      });

      test('an empty value matches only the empty string', async () => {
        await store.set('k', '', LONG);
        assert.equal(await store.deleteIfEquals('k', 'x'), false);
        assert.equal(await store.deleteIfEquals('k', ''), true);
        assert.equal(await store.get('k'), undefined);
      });

      test('a lock taken over after expiry is not released by its former owner', async () => {
        assert.equal(await store.setIfAbsent('lock', 'first', SHORT), true);
        await advance(PAST_SHORT);
        assert.equal(await store.setIfAbsent('lock', 'second', LONG), true);
        assert.equal(await store.deleteIfEquals('lock', 'first'), false);
        assert.equal(await store.get('lock'), 'second');
      });

      test(`exactly one of ${PARALLEL} concurrent releases deletes`, async () => {
        await store.set('lock', 'owner', LONG);
        const results = await Promise.all(Array.from({ length: PARALLEL }, () => store.deleteIfEquals('lock', 'owner')));
        assert.equal(results.filter(Boolean).length, 1);
      });
    });

    describe('sets', () => {
      test('addMembers adds, ignoring duplicates; members lists them', async () => {
        assert.deepEqual(await store.members('s'), []);
        await store.addMembers('s', ['a', 'b'], LONG);
        await store.addMembers('s', ['b', 'c', 'c'], LONG);
        assert.deepEqual((await store.members('s')).sort(), ['a', 'b', 'c']);
      });

      test('removeMembers removes; removing the last member removes the set', async () => {
        await store.addMembers('s', ['a', 'b', 'c'], LONG);
        await store.removeMembers('s', ['a', 'missing']);
        assert.deepEqual((await store.members('s')).sort(), ['b', 'c']);
        await store.removeMembers('s', ['b', 'c']);
        assert.deepEqual(await store.members('s'), []);
        assert.equal(await store.setIfAbsent('s', 'now a value', LONG), true);
        await store.removeMembers('missing', ['a']);
      });

      test('empty member lists change nothing', async () => {
        await store.addMembers('s', [], LONG);
        assert.deepEqual(await store.members('s'), []);
        assert.equal(await store.setIfAbsent('s', 'x', LONG), true);
        await store.addMembers('t', ['a'], LONG);
        await store.removeMembers('t', []);
        assert.deepEqual(await store.members('t'), ['a']);
      });

      test('a set expires after its TTL', async () => {
        await store.addMembers('s', ['a'], SHORT);
        assert.deepEqual(await store.members('s'), ['a']);
        await advance(PAST_SHORT);
        assert.deepEqual(await store.members('s'), []);
      });

      test('adding extends the TTL to the larger one, never shortens it', async () => {
        await store.addMembers('extended', ['a'], SHORT);
        await store.addMembers('extended', ['b'], LONG);
        await store.addMembers('kept', ['a'], LONG);
        await store.addMembers('kept', ['b'], SHORT);
        await advance(PAST_SHORT);
        assert.deepEqual((await store.members('extended')).sort(), ['a', 'b']);
        assert.deepEqual((await store.members('kept')).sort(), ['a', 'b']);
      });

      test('many members in one call', async () => {
        const many = Array.from({ length: 10_000 }, (_, i) => `member-${i}`);
        await store.addMembers('big', many, LONG);
        assert.equal((await store.members('big')).length, many.length);
      });

      test('a key holding a value is not a set, and vice versa', async () => {
        await store.set('value', 'x', LONG);
        await store.addMembers('set', ['x'], LONG);
        await assert.rejects(store.members('value'));
        await assert.rejects(store.addMembers('value', ['y'], LONG));
        await assert.rejects(store.get('set'));
        await assert.rejects(store.take('set'));
        assert.equal(await store.get('value'), 'x');
        assert.deepEqual(await store.members('set'), ['x']);
      });
    });

    describe('lifecycle', () => {
      test('ping resolves', async () => {
        await store.ping();
      });

      test('an aborted signal rejects with its reason', async () => {
        const reason = new Error('client went away');
        const signal = AbortSignal.abort(reason);
        await assert.rejects(store.get('a', signal), (error) => error === reason);
        await assert.rejects(store.set('a', 'x', LONG, signal), (error) => error === reason);
        assert.equal(await store.get('a'), undefined);
      });

      test('stores from the factory do not share keys', async () => {
        const other = await makeStore();
        try {
          await store.set('shared-name', 'mine', LONG);
          assert.equal(await other.store.get('shared-name'), undefined);
          await other.store.set('shared-name', 'theirs', LONG);
          assert.equal(await store.get('shared-name'), 'mine');
        } finally {
          await other.cleanup();
        }
      });

      test('after close, calls reject with StoreUnavailableError', async () => {
        await store.set('a', 'x', LONG);
        await store.close();
        await assert.rejects(store.get('a'), StoreUnavailableError);
        await assert.rejects(store.ping(), StoreUnavailableError);
        await store.close();
      });
    });
  });
}
