/**
 * The message bus: the same behaviour in process and on Valkey pub/sub (two buses on one real
 * redis-server stand for two replicas), and a Valkey subscription that survives a restart of
 * the server.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryBus, type MessageBus } from '../../src/store/bus.ts';
import { createValkeyBus } from '../../src/store/valkey_bus.ts';
import { waitFor } from '../support/mcp-upstream.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';

describe('memory bus', () => {
  test('delivers to every subscription of the channel, counts them, and stops after unsubscribe', async () => {
    const bus = createMemoryBus();
    const got: string[] = [];
    const off1 = await bus.subscribe('c', (m) => void got.push(`1:${m}`));
    await bus.subscribe('c', (m) => void got.push(`2:${m}`));
    await bus.subscribe('other', (m) => void got.push(`x:${m}`));
    assert.equal(await bus.publish('c', 'hello'), 2);
    assert.deepEqual(got, ['1:hello', '2:hello']);
    off1();
    assert.equal(await bus.publish('c', 'again'), 1);
    assert.deepEqual(got, ['1:hello', '2:hello', '2:again']);
    await assert.rejects(bus.publish('', 'x'), TypeError);
  });

  test('a handler that throws is reported and does not stop the others', async () => {
    const reported: unknown[] = [];
    const bus = createMemoryBus({ onHandlerError: (e) => void reported.push(e) });
    const got: string[] = [];
    await bus.subscribe('c', () => {
      throw new Error('boom');
    });
    await bus.subscribe('c', (m) => void got.push(m));
    assert.equal(await bus.publish('c', 'm'), 2);
    assert.deepEqual(got, ['m']);
    assert.equal(reported.length, 1);
  });
});

describe('valkey bus', () => {
  let redis: RedisServer;
  const buses: MessageBus[] = [];
  const open = () => {
    const bus = createValkeyBus({ url: redis.url, keyPrefix: 'bus-test:', commandTimeoutMs: 1000 });
    buses.push(bus);
    return bus;
  };

  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await Promise.all(buses.map((b) => b.close()));
    await redis.stop();
  });

  test('a message published on one replica reaches the subscribers of every replica; PUBLISH counts the replicas', async () => {
    const [a, b] = [open(), open()];
    const got: string[] = [];
    await a.subscribe('events', (m) => void got.push(`a:${m}`));
    await b.subscribe('events', (m) => void got.push(`b:${m}`));
    assert.equal(await a.publish('events', 'one'), 2);
    await waitFor(() => got.length === 2, 'both replicas');
    assert.deepEqual(got.sort(), ['a:one', 'b:one']);
  });

  test('after Valkey restarts, the subscriptions are renewed and messages flow again', async () => {
    const [a, b] = [open(), open()];
    const got: string[] = [];
    await b.subscribe('after-restart', (m) => void got.push(m));
    assert.equal(await a.publish('after-restart', 'before'), 1);
    await waitFor(() => got.includes('before'), 'the first message');

    await redis.restart();
    let receivers = 0;
    for (let i = 0; i < 100 && receivers === 0; i++) {
      receivers = await a.publish('after-restart', `probe-${i}`).catch(() => 0);
      if (receivers === 0) await sleep(50);
    }
    assert.equal(receivers, 1, 'the subscriber is back');
    await waitFor(() => got.some((m) => m.startsWith('probe-')), 'a message after the restart');
  });

  test('an unreachable Valkey is an outage, not zero receivers', async () => {
    const bus = open();
    await redis.stop();
    try {
      await assert.rejects(bus.publish('events', 'lost'), { name: 'StoreUnavailableError' });
    } finally {
      await redis.restart();
    }
  });
});
