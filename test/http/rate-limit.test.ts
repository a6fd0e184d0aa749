/** The fixed-window rate limiter over the storage port (memory adapter with a fake clock). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TooManyRequests } from '../../src/http/errors.ts';
import { combineLimiters, createGlobalLimiter, createRateLimiter, limitKey } from '../../src/http/rate-limit.ts';
import { createMemoryStore } from '../../src/store/memory.ts';

test('counts per key and window, answers Retry-After until the window ends', async () => {
  let clock = 60_000 * 30_000_000; // a window boundary
  const store = createMemoryStore({ now: () => clock });
  const limiter = createRateLimiter({ store, name: 'test', limit: 2, windowMs: 60_000, now: () => clock });
  assert.deepEqual(await limiter.hit('10.0.0.1'), { allowed: true, remaining: 1, retryAfterSeconds: 60 });
  assert.equal((await limiter.hit('10.0.0.1')).allowed, true);
  clock += 15_000;
  assert.deepEqual(await limiter.hit('10.0.0.1'), { allowed: false, remaining: 0, retryAfterSeconds: 45 });
  await assert.rejects(limiter.enforce('10.0.0.1'), (e: unknown) => e instanceof TooManyRequests && e.status === 429 && e.headers['retry-after'] === '45');
  assert.equal((await limiter.hit('10.0.0.2')).allowed, true, 'another key has its own budget');
  clock += 45_000;
  assert.equal((await limiter.hit('10.0.0.1')).allowed, true, 'a new window');
  await store.close();
});

test('concurrent hits are counted exactly: never more than the limit admitted', async () => {
  const store = createMemoryStore();
  const limiter = createRateLimiter({ store, name: 'burst', limit: 10, windowMs: 60_000 });
  const results = await Promise.all(Array.from({ length: 25 }, () => limiter.hit('10.0.0.1')));
  assert.equal(results.filter((r) => r.allowed).length, 10);
  assert.equal((await limiter.hit('10.0.0.1')).allowed, false);
  await store.close();
});

test('an IPv6 client is counted per /64, an IPv4-mapped one as its IPv4 address', () => {
  assert.equal(limitKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(limitKey('2001:db8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64');
  assert.equal(limitKey('2001:0db8:0001:0002::9'), '2001:db8:1:2::/64');
  assert.equal(limitKey('::1'), '0:0:0:0::/64');
  assert.equal(limitKey('::ffff:192.0.2.7'), '192.0.2.7');
  assert.equal(limitKey('192.0.2.7'), '192.0.2.7');
});

test('options are checked when the limiter is made', () => {
  const store = createMemoryStore();
  assert.throws(() => createRateLimiter({ store, name: 'x', limit: 0, windowMs: 1000 }), TypeError);
  assert.throws(() => createRateLimiter({ store, name: 'x', limit: 1, windowMs: -1 }), TypeError);
  assert.throws(() => createRateLimiter({ store, name: 'a:b', limit: 1, windowMs: 1000 }), TypeError);
});

test('the global limiter counts every client together, exactly under concurrency, and resets with the window', async () => {
  let clock = 60_000 * 30_000_000;
  const store = createMemoryStore({ now: () => clock });
  const limiter = createGlobalLimiter({ store, name: 'everyone', limit: 10, windowMs: 60_000, now: () => clock });
  const results = await Promise.all(Array.from({ length: 25 }, (_, i) => limiter.hit(`10.0.0.${i}`)));
  assert.equal(results.filter((r) => r.allowed).length, 10);
  clock += 20_000;
  await assert.rejects(limiter.enforce('192.0.2.1'), (e: unknown) => e instanceof TooManyRequests && e.headers['retry-after'] === '40');
  clock += 40_000;
  assert.equal((await limiter.hit('192.0.2.1')).allowed, true, 'a new window');
  await store.close();
});

test('combined limits: a client over its own limit is refused before it is counted globally', async () => {
  const store = createMemoryStore();
  const limiter = combineLimiters(
    createRateLimiter({ store, name: 'own', limit: 2, windowMs: 60_000 }),
    createGlobalLimiter({ store, name: 'all', limit: 3, windowMs: 60_000 }),
  );
  for (let i = 0; i < 5; i++) await limiter.hit('10.0.0.1');
  assert.equal((await limiter.hit('10.0.0.2')).allowed, true, 'the flooding client used only its own 2 of the global 3');
  assert.equal((await limiter.hit('10.0.0.3')).allowed, false, 'the global limit is reached');
  await store.close();
});
