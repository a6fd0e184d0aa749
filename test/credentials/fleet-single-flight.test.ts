/**
 * The fleet single flight on a real redis-server shared by two store clients (two replicas),
 * and on the memory store (one store object shared, as replicas share a server).
 */
import { after, before } from 'node:test';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { fleetSingleFlightContract } from './fleet-single-flight.contract.ts';

let server: RedisServer;
before(async () => {
  server = await startRedis();
});
after(async () => {
  await server?.stop();
});

fleetSingleFlightContract('a standalone redis-server', async () => {
  const a = createValkeyStore({ url: server.url, keyPrefix: 'fleet:' });
  const b = createValkeyStore({ url: server.url, keyPrefix: 'fleet:' });
  return { a, b, cleanup: async () => void (await Promise.all([a.close(), b.close()])) };
});

fleetSingleFlightContract('one memory store', async () => {
  const store = createMemoryStore();
  return { a: store, b: store, cleanup: () => store.close() };
});
