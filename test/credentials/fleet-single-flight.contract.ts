/**
 * The fleet single flight against a real store shared by two "replicas" (two store clients on
 * one server): run by `fleet-single-flight.test.ts` on a standalone redis-server, and by the
 * cluster and sentinel store suites on theirs.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createFleetSingleFlight, createSingleFlight, lockKey, type SingleFlight } from '../../src/credentials/single-flight.ts';
import { HttpError } from '../../src/http/errors.ts';
import type { Store } from '../../src/store/port.ts';

/** Two clients of one shared store, as two replicas hold them. */
export interface ReplicaStores {
  a: Store;
  b: Store;
  cleanup(): Promise<void>;
}

/**
 * A task of the kind the single flight is for: it consumes a one-time value (counted in
 * `consumed`) only when the store holds no result yet, as a refresh re-reads the store first.
 */
function consumingTask(store: Store, key: string, consumed: { count: number }, label: string) {
  return async (): Promise<string> => {
    const existing = await store.get(`result:${key}`);
    if (existing !== undefined) return existing;
    consumed.count++;
    await sleep(60); // the authorization server's round trip
    const result = `fresh-from-${label}`;
    await store.set(`result:${key}`, result, 60_000);
    return result;
  };
}

/** Registers the suite; `makeStores` is called once per test. */
export function fleetSingleFlightContract(name: string, makeStores: () => Promise<ReplicaStores>): void {
  describe(`fleet single flight on ${name}`, () => {
    let stores: ReplicaStores;
    let n = 0;
    let key: string;
    beforeEach(async () => {
      stores = await makeStores();
      key = `k${++n}-${process.pid}-${Date.now()}`;
    });
    afterEach(async () => {
      await stores.cleanup();
    });

    async function race(flights: [SingleFlight, SingleFlight], callers: number) {
      const consumed = { count: 0 };
      const results = await Promise.all(
        Array.from({ length: callers }, (_, i) => {
          const [flight, store, label] = i % 2 === 0 ? [flights[0], stores.a, 'a'] : [flights[1], stores.b, 'b'];
          return flight(key, consumingTask(store, key, consumed, label));
        }),
      );
      return { consumed: consumed.count, results };
    }

    test('24 callers split over two replicas: the value is consumed once and all get the same result', async () => {
      const { consumed, results } = await race([createFleetSingleFlight({ store: stores.a }), createFleetSingleFlight({ store: stores.b })], 24);
      assert.equal(consumed, 1);
      assert.equal(new Set(results).size, 1);
      assert.equal(await stores.a.get(lockKey(key)), undefined, 'the lock is released');
    });

    test('control: the in-process single flight alone lets each replica consume the value', async () => {
      const { consumed } = await race([createSingleFlight(), createSingleFlight()], 24);
      assert.equal(consumed, 2);
    });

    test('callers in one process share one run (one of them goes to the store)', async () => {
      const flight = createFleetSingleFlight({ store: stores.a });
      let runs = 0;
      const results = await Promise.all(Array.from({ length: 10 }, () => flight(key, async () => (await sleep(30), ++runs))));
      assert.deepEqual(results, Array(10).fill(1));
    });

    test('the lock is released after a failure too, and the failure reaches every caller', async () => {
      const flight = createFleetSingleFlight({ store: stores.a });
      const failing = () => flight(key, async () => (await sleep(20), Promise.reject(new Error('the AS said no'))));
      const outcomes = await Promise.allSettled([failing(), failing()]);
      assert.deepEqual(outcomes.map((o) => o.status), ['rejected', 'rejected']);
      assert.equal(await stores.a.get(lockKey(key)), undefined);
      assert.equal(await createFleetSingleFlight({ store: stores.b, waitMs: 100 })(key, async () => 'next'), 'next');
    });

    test("a crashed holder's lock expires on its own: a waiting caller goes on within the TTL", async () => {
      await stores.a.set(lockKey(key), 'a-replica-that-died', 500);
      const flight = createFleetSingleFlight({ store: stores.b, waitMs: 5000 });
      const started = performance.now();
      assert.equal(await flight(key, async () => 'done'), 'done');
      const waited = performance.now() - started;
      assert.ok(waited >= 300 && waited < 3000, `waited ${Math.round(waited)} ms`);
    });

    test('a lock held past the wait: 503 temporarily_unavailable with Retry-After, and the task never runs', async () => {
      await stores.a.set(lockKey(key), 'a-replica-that-died', 10_000);
      const flight = createFleetSingleFlight({ store: stores.b, waitMs: 300, lockTtlMs: 10_000 });
      let ran = false;
      const error = await flight(key, async () => (ran = true)).then(
        () => assert.fail('expected a 503'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof HttpError);
      assert.equal(error.status, 503);
      assert.equal(error.code, 'temporarily_unavailable');
      assert.equal(error.headers['retry-after'], '10');
      assert.equal(ran, false);
    });

    test('a holder that outlived its lock does not release the next holder’s', async () => {
      const slow = createFleetSingleFlight({ store: stores.a, lockTtlMs: 200 });
      const running = slow(key, () => sleep(500).then(() => 'late'));
      await sleep(350);
      assert.equal(await stores.b.setIfAbsent(lockKey(key), 'next-holder', 10_000), true);
      assert.equal(await running, 'late');
      assert.equal(await stores.b.get(lockKey(key)), 'next-holder');
    });

    test('different keys do not wait for each other', async () => {
      await stores.a.set(lockKey(`${key}-other`), 'busy', 10_000);
      const flight = createFleetSingleFlight({ store: stores.b, waitMs: 200 });
      assert.equal(await flight(key, async () => 'free'), 'free');
    });

    test('the cost of the lock on one uncontended run (reported, not asserted)', async (t) => {
      const flight = createFleetSingleFlight({ store: stores.a });
      const rounds = 200;
      const timed = async (run: (i: number) => Promise<unknown>) => {
        const samples: number[] = [];
        for (let i = 0; i < rounds; i++) {
          const start = performance.now();
          await run(i);
          samples.push(performance.now() - start);
        }
        samples.sort((x, y) => x - y);
        return { p50: samples[rounds >> 1]!, p99: samples[Math.floor(rounds * 0.99)]! };
      };
      const bare = await timed(() => stores.a.get(`result:${key}`));
      const locked = await timed((i) => flight(`${key}-${i}`, () => stores.a.get(`result:${key}`)));
      t.diagnostic(
        `${name}: a run with only one store read: bare p50 ${bare.p50.toFixed(3)} ms, p99 ${bare.p99.toFixed(3)} ms; ` +
          `under the lock p50 ${locked.p50.toFixed(3)} ms, p99 ${locked.p99.toFixed(3)} ms ` +
          `(the lock adds ${(locked.p50 - bare.p50).toFixed(3)} ms at p50: SET NX PX + the compare-and-delete script)`,
      );
    });
  });
}
