/**
 * Swapping the session index entries for ones under the current key (`mcpgate keys reseal`)
 * while replicas serve, against a real redis-server: a logout, a refresh or a login landing at
 * each step of a swap (and a swap landing inside a refresh or a logout) leaves each index holding
 * exactly the entries of the sessions that are stored, each under the current key, so signing out
 * everywhere and `mcpgate sessions list` find every live session and nothing else.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Redis } from 'iovalkey';
import { resealSessionIndexes } from '../../src/authserver/records/session-index-reseal.ts';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import type { AuthStores } from '../../src/authserver/records/records.ts';
import type { Store } from '../../src/store/port.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { createValkeyMaintenance } from '../../src/store/valkey_maintenance.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';

const k0 = { id: 'k0', key: randomBytes(32) };
const k1 = { id: 'k1', key: randomBytes(32) };
const HOUR = 3_600_000;

let redis: RedisServer;
let raw: Redis;
before(async () => {
  redis = await startRedis();
  raw = new Redis(redis.url);
});
after(async () => {
  raw?.disconnect();
  await redis?.stop();
});

/** A step of the store a hook can run before, once: the operations, and whether it is the one. */
type Hook = { before: Array<keyof Store>; when: (key: string | string[]) => boolean; run: (w: World) => Promise<unknown> };

/** What {@link world} builds. */
type World = Awaited<ReturnType<typeof world>>;

/** The store with `hook` run (once, awaited) just before the matching call. */
function hooked(store: Store, hook: Hook, self: () => World): Store {
  let done = false;
  return new Proxy(store, {
    get(target, prop: keyof Store) {
      const method = target[prop] as (...args: unknown[]) => unknown;
      if (typeof method !== 'function') return method;
      return async (...args: unknown[]) => {
        if (!done && hook.before.includes(prop) && hook.when(args[0] as string | string[])) {
          done = true;
          await hook.run(self());
        }
        return method.apply(target, args);
      };
    },
  });
}

/** A fresh key prefix with: the store, a k0-only replica's stores (as before the rotation), a [k1, k0] replica's, and a reseal run. */
async function world(hooks: { serving?: Hook; reseal?: Hook } = {}) {
  const keyPrefix = `sir${randomBytes(4).toString('hex')}:`;
  const store = createValkeyStore({ url: redis.url, keyPrefix });
  const old = createAuthStores({ store, sealer: createSealer({ keys: [k0] }) });
  const serving = createAuthStores({ store: hooks.serving ? hooked(store, hooks.serving, () => self) : store, sealer: createSealer({ keys: [k1, k0] }) });
  const current = createAuthStores({ store, sealer: createSealer({ keys: [k1] }) });
  const source = await createValkeyMaintenance({ url: redis.url, keyPrefix });
  const reseal = () =>
    resealSessionIndexes({ source, store: hooks.reseal ? hooked(store, hooks.reseal, () => self) : store, sealer: createSealer({ keys: [k1, k0] }), sealingKeyId: 'k1' });
  /** The members of the user's index and of `sessions`, as the key ids they are sealed under. */
  const indexes = async (subject: string) => ({
    user: (await raw.smembers(`${keyPrefix}user:${subject}:sessions`)).map((m) => m.split('.')[1]),
    all: (await raw.smembers(`${keyPrefix}sessions`)).map((m) => m.split('.')[1]),
  });
  const close = async () => {
    await source.close();
    await store.close();
  };
  const self = { keyPrefix, old, serving, current, reseal, indexes, close, sid: '' };
  return self;
}

async function newSession(stores: AuthStores, subject: string): Promise<string> {
  const sessionId = randomBytes(16).toString('base64url');
  await stores.sessions.put({ sessionId, subject, clientId: 'c1', createdAt: Date.now(), expiresAt: Date.now() + HOUR });
  return sessionId;
}

const isSessionRecord = (key: string | string[]) => [key].flat().some((k) => k.startsWith('session:{'));

test('a logout between the swap adding its entries and rewriting the record: no entry is left, old or new', async () => {
  const w = await world({ reseal: { before: ['compareAndSet'], when: isSessionRecord, run: (w) => w.serving.sessions.revoke(w.sid) } });
  try {
    const sid = (w.sid = await newSession(w.old, 'alice'));
    const report = await w.reseal();
    assert.equal(await w.current.sessions.get(sid), undefined);
    assert.deepEqual(await w.indexes('alice'), { user: [], all: [] }, 'neither the old entries nor the swap’s new ones stay');
    assert.deepEqual([report.resealed, report.stale, report.changed], [0, 0, 0]);
  } finally {
    await w.close();
  }
});

test('a refresh between the swap adding its entries and rewriting the record: the swap is retried, one entry per index, under k1', async () => {
  const w = await world({ reseal: { before: ['compareAndSet'], when: isSessionRecord, run: (w) => w.serving.sessions.extend(w.sid, Date.now() + 2 * HOUR) } });
  try {
    const sid = (w.sid = await newSession(w.old, 'alice'));
    const report = await w.reseal();
    assert.ok((await w.current.sessions.get(sid))!.expiresAt > Date.now() + HOUR, 'the refresh kept its effect');
    assert.deepEqual(await w.indexes('alice'), { user: ['k1'], all: ['k1'] });
    assert.deepEqual(await w.current.sessions.listForUser('alice'), [sid]);
    assert.deepEqual(await w.current.sessions.listAll(), [sid]);
    assert.equal(report.resealed, 2);
  } finally {
    await w.close();
  }
});

test('a logout between the swap rewriting the record and removing the old entries: no entry is left', async () => {
  const w = await world({ reseal: { before: ['removeMembers'], when: (key) => key === 'user:alice:sessions', run: (w) => w.serving.sessions.revoke(w.sid) } });
  try {
    w.sid = await newSession(w.old, 'alice');
    await w.reseal();
    assert.deepEqual(await w.indexes('alice'), { user: [], all: [] });
  } finally {
    await w.close();
  }
});

test('a whole swap inside a refresh (after its read): the refresh does not bring the old entries back', async () => {
  // The refresh re-adds the entries it read (to move the indexes' TTL); the swap runs just before.
  const w = await world({ serving: { before: ['addMembers'], when: (key) => key === 'user:alice:sessions', run: (w) => w.reseal() } });
  try {
    const sid = await newSession(w.old, 'alice');
    assert.ok(await w.serving.sessions.extend(sid, Date.now() + 2 * HOUR));
    assert.deepEqual(await w.indexes('alice'), { user: ['k1'], all: ['k1'] }, 'no entry under k0 came back');
    assert.deepEqual(await w.current.sessions.listForUser('alice'), [sid]);
  } finally {
    await w.close();
  }
});

test('a whole swap inside a logout, just before it removes the record: the logout removes the new entries', async () => {
  const w = await world({ serving: { before: ['delete', 'take'], when: isSessionRecord, run: (w) => w.reseal() } });
  try {
    const sid = await newSession(w.old, 'alice');
    await w.serving.sessions.revoke(sid);
    assert.deepEqual(await w.indexes('alice'), { user: [], all: [] }, 'no entry names the ended session');
  } finally {
    await w.close();
  }
});

test('a login and a logout during a run, and an entry left by an ended session: afterwards each index holds exactly the live sessions, under k1', async () => {
  const w = await world();
  try {
    const sessions = await Promise.all(Array.from({ length: 20 }, () => newSession(w.old, 'bob')));
    // An ended session whose entries were never removed (a logout cut short).
    const ended = await newSession(w.old, 'bob');
    await raw.del(`${w.keyPrefix}session:{${ended}}`);
    const [report, fresh] = await Promise.all([w.reseal(), newSession(w.serving, 'bob'), w.serving.sessions.revoke(sessions[0]!)]);
    const live = [...sessions.slice(1), fresh].sort();
    assert.deepEqual((await w.current.sessions.listForUser('bob')).sort(), live);
    assert.deepEqual((await w.current.sessions.listAll()).sort(), live);
    const { user, all } = await w.indexes('bob');
    assert.deepEqual([user.length, all.length], [live.length, live.length], 'one entry per live session in each index');
    assert.ok([...user, ...all].every((id) => id === 'k1'));
    assert.deepEqual([report.changed, report.stale], [0, 2]);
    // Idempotent: nothing left to do.
    const again = await w.reseal();
    assert.deepEqual([again.resealed, again.stale, again.changed, again.current], [0, 0, 0, 2 * live.length]);
  } finally {
    await w.close();
  }
});
