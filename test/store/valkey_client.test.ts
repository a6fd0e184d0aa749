import assert from 'node:assert/strict';
import { once, type EventEmitter } from 'node:events';
import { after, before, describe, it } from 'node:test';
import type { Redis } from 'iovalkey';
import { createValkeyClient } from '../../src/store/valkey_client.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';

let server: RedisServer;
before(async () => {
  server = await startRedis();
});
after(async () => {
  await server?.stop();
});

describe('the Valkey client', () => {
  // iovalkey listens for a socket's first error only; a TLS connection refused by either side can
  // emit a second one (the peer's alert), which used to end the process as an uncaught exception.
  it('survives a connection socket that emits more than one error', async () => {
    const client = createValkeyClient({ url: server.url, connectTimeoutMs: 2000, commandTimeoutMs: 2000 }) as Redis;
    const seen: string[] = [];
    client.on('error', (error: Error) => seen.push(error.message));
    try {
      if (client.status !== 'ready') await once(client, 'ready');
      assert.equal(await client.ping(), 'PONG');
      const socket = (client as unknown as { stream: EventEmitter }).stream;
      socket.emit('error', new Error('first'));
      // Without a listener of its own the socket would throw this one.
      assert.doesNotThrow(() => socket.emit('error', new Error('tlsv1 alert decode error')));
      assert.deepEqual(seen, ['first'], 'the first error reaches the client, the later one is dropped');
      assert.equal(await client.ping(), 'PONG');
    } finally {
      client.disconnect();
    }
  });
});
