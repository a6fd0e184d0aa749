/**
 * The domain stores over the storage port: the same suite runs on the memory store (fake clock)
 * and on a real redis-server through the Valkey adapter (real time, short TTLs).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AuthStores, AuthorizationCodeRecord, IdpTokens, RefreshTokenRecord, SessionRecord } from '../../src/authserver/records/records.ts';
import { createAuthStores, tokenHash } from '../../src/authserver/records/stores.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/port.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';

interface Fixture {
  store: Store;
  stores: AuthStores;
  now(): number;
  advance(ms: number): Promise<void>;
}

const sealer = createSealer({ keys: [{ id: 'k1', key: randomBytes(32) }] });
const HOUR = 3_600_000;

function storesSuite(name: string, make: () => Promise<Fixture>): void {
  describe(`auth stores on ${name}`, () => {
    let f: Fixture;
    before(async () => {
      f = await make();
    });
    after(async () => {
      await f.store.close();
    });

    const session = (sid: string, subject = 'alice'): SessionRecord => ({ sessionId: sid, subject, clientId: 'c1', createdAt: f.now(), expiresAt: f.now() + HOUR });
    const code = (sid: string): AuthorizationCodeRecord => ({
      clientId: 'c1', redirectUri: 'http://127.0.0.1:3000/cb', codeChallenge: 'x'.repeat(43), resource: 'https://gw/a/mcp',
      scopes: ['mcp'], subject: 'alice', sessionId: sid, createdAt: f.now(),
    });
    const rt = (sid: string): RefreshTokenRecord => ({ sessionId: sid, clientId: 'c1', resource: 'https://gw/a/mcp', scopes: ['mcp'], subject: 'alice', createdAt: f.now() });
    const idp: IdpTokens = { accessToken: 'idp-access-SECRET', refreshToken: 'idp-refresh-SECRET', idToken: 'idp-id-SECRET', expiresAt: Date.now() + HOUR };
    const unique = () => randomBytes(8).toString('hex');

    test('a pending authorization is taken once, sealed at rest, and does not open under another key', async () => {
      const state = unique();
      const pending = { clientId: 'c1', redirectUri: 'http://127.0.0.1/cb', codeChallenge: 'c', resource: 'r', scopes: [], idpCodeVerifier: 'VERIFIER-SECRET', idpNonce: 'n', createdAt: 1 };
      await f.stores.pending.put(state, pending, 60_000);
      const raw = await f.store.get(`pending:${state}`);
      assert.ok(raw && !raw.includes('VERIFIER-SECRET'), 'the verifier is sealed');
      await f.store.set(`pending:other${state}`, raw, 60_000);
      assert.equal(await f.stores.pending.take(`other${state}`), undefined, 'a value copied under another key does not open: nothing is there');
      assert.deepEqual(await f.stores.pending.take(state), pending);
      assert.equal(await f.stores.pending.take(state), undefined);
    });

    test('a code is consumed once; the next redemption reports the session it belonged to', async () => {
      const c = unique();
      const record = code('s-code');
      await f.stores.codes.put(c, record, 60_000);
      assert.equal((await f.store.get(`code:${c}`)), undefined, 'stored under its hash, not the code');
      assert.deepEqual(await f.stores.codes.consume(c), { record, reused: false });
      assert.deepEqual(await f.stores.codes.consume(c), { sessionId: 's-code', reused: true });
      assert.equal(await f.stores.codes.consume('never-issued'), undefined);
    });

    test('of 20 concurrent redemptions of one code exactly one wins', async () => {
      const c = unique();
      await f.stores.codes.put(c, code('s-race'), 60_000);
      const results = await Promise.all(Array.from({ length: 20 }, () => f.stores.codes.consume(c)));
      assert.equal(results.filter((r) => r && !r.reused).length, 1);
      assert.equal(results.filter((r) => r?.reused).length, 19);
    });

    test('an expired code is gone', async () => {
      const c = unique();
      await f.stores.codes.put(c, code('s-exp'), 200);
      await f.advance(400);
      assert.equal(await f.stores.codes.consume(c), undefined);
    });

    test('sessions: index per user, revoke removes the record, the IdP tokens and the index entry', async () => {
      const user = `u:${unique()}`; // a ':' in the subject must not collide with other keys
      await f.stores.sessions.put(session('s1', user));
      await f.stores.sessions.put(session('s2', user));
      await f.stores.idpTokens.put('s1', idp, HOUR);
      assert.deepEqual((await f.stores.sessions.listForUser(user)).sort(), ['s1', 's2']);
      assert.equal((await f.stores.sessions.get('s1'))?.subject, user);
      await f.stores.sessions.revoke('s1');
      assert.equal(await f.stores.sessions.get('s1'), undefined);
      assert.equal(await f.stores.idpTokens.get('s1'), undefined);
      assert.deepEqual(await f.stores.sessions.listForUser(user), ['s2']);
      await f.stores.sessions.revoke('never-existed');
    });

    test('sessions: listAll holds every live session (operators\' list); revoked and expired ones leave it', async () => {
      const a = `all-a-${unique()}`;
      const b = `all-b-${unique()}`;
      const short = `all-c-${unique()}`;
      await f.stores.sessions.put(session(a, 'x'));
      await f.stores.sessions.put(session(b, 'y'));
      await f.stores.sessions.put({ ...session(short, 'z'), expiresAt: f.now() + 1500 });
      const listed = await f.stores.sessions.listAll();
      for (const sid of [a, b, short]) assert.ok(listed.includes(sid), sid);
      await f.stores.sessions.revoke(a);
      await f.advance(2000);
      const after = await f.stores.sessions.listAll();
      assert.ok(after.includes(b));
      assert.ok(!after.includes(a) && !after.includes(short));
      // Pruned from the index itself, not only filtered.
      assert.ok(!(await f.store.members('sessions')).includes(short));
    });

    test('IdP tokens are sealed under their own key and round-trip', async () => {
      await f.stores.sessions.put(session('s-idp'));
      await f.stores.idpTokens.put('s-idp', idp, HOUR);
      const raw = await f.store.get('idp:{s-idp}');
      assert.ok(raw && !raw.includes('SECRET'), 'no token in the stored value');
      assert.deepEqual(await f.stores.idpTokens.get('s-idp'), idp);
      await f.store.set('idp:{s-other}', raw, HOUR);
      assert.equal(await f.stores.idpTokens.get('s-other'), undefined, "one session's tokens do not open as another's");
    });

    test('IdP tokens written by another replica are seen at once (the in-process open cache checks the bytes)', async () => {
      const replica = createAuthStores({ store: f.store, sealer, now: f.now });
      await f.stores.sessions.put(session('s-replica'));
      await f.stores.idpTokens.put('s-replica', idp, HOUR);
      assert.equal((await f.stores.idpTokens.get('s-replica'))?.accessToken, idp.accessToken);
      await replica.idpTokens.put('s-replica', { ...idp, accessToken: 'rotated-elsewhere' }, HOUR);
      assert.equal((await f.stores.idpTokens.get('s-replica'))?.accessToken, 'rotated-elsewhere');
      await replica.sessions.revoke('s-replica');
      assert.equal(await f.stores.idpTokens.get('s-replica'), undefined);
    });

    test('extend slides a live session and never revives a revoked one', async () => {
      await f.stores.sessions.put(session('s-ext'));
      const later = f.now() + 2 * HOUR;
      assert.equal((await f.stores.sessions.extend('s-ext', later))?.expiresAt, later);
      assert.equal((await f.stores.sessions.get('s-ext'))?.expiresAt, later);
      await f.stores.sessions.revoke('s-ext');
      assert.equal(await f.stores.sessions.extend('s-ext', later), undefined);
      assert.equal(await f.stores.sessions.get('s-ext'), undefined);
    });

    test('refresh tokens rotate once; a second rotation is a reuse; a dead session kills the token', async () => {
      const t = unique();
      await f.stores.sessions.put(session('s-rt'));
      const record = rt('s-rt');
      await f.stores.refreshTokens.put(t, record, HOUR);
      assert.deepEqual(await f.stores.refreshTokens.peek(t), record);
      assert.deepEqual(await f.stores.refreshTokens.rotate(t), { record, reused: false });
      const again = await f.stores.refreshTokens.rotate(t);
      assert.equal(again?.reused, true);
      assert.equal(again?.record.sessionId, 's-rt');

      const t2 = unique();
      await f.stores.refreshTokens.put(t2, rt('s-rt'), HOUR);
      await f.stores.sessions.revoke('s-rt');
      assert.equal(await f.stores.refreshTokens.rotate(t2), undefined, 'the family died with its session');

      const t3 = unique();
      await f.stores.refreshTokens.put(t3, rt('s-rt'), HOUR);
      await f.stores.refreshTokens.delete(t3);
      assert.equal(await f.stores.refreshTokens.peek(t3), undefined);
    });

    test('of 20 concurrent rotations of one refresh token exactly one is not a reuse', async () => {
      const t = unique();
      await f.stores.sessions.put(session('s-rt-race'));
      await f.stores.refreshTokens.put(t, rt('s-rt-race'), HOUR);
      const results = await Promise.all(Array.from({ length: 20 }, () => f.stores.refreshTokens.rotate(t)));
      assert.equal(results.filter((r) => r && !r.reused).length, 1);
      assert.equal(results.filter((r) => r?.reused).length, 19);
    });

    test('every record that grants access is sealed for its key: forged or copied records grant nothing', async () => {
      const sid = `s-seal-${unique()}`;
      await f.stores.sessions.put(session(sid));
      const sessionRaw = await f.store.get(`session:{${sid}}`);
      assert.ok(sessionRaw?.startsWith('v1.k1.') && !sessionRaw.includes(sid), 'the session record is sealed');
      // A session record forged in plain JSON, and a real one copied under another sid: neither is a session.
      const forgedSid = `s-forged-${unique()}`;
      await f.store.set(`session:{${forgedSid}}`, JSON.stringify({ session: { ...session(forgedSid) }, indexEntry: 'x' }), HOUR);
      assert.equal(await f.stores.sessions.get(forgedSid), undefined);
      await f.store.set(`session:{${forgedSid}}`, sessionRaw!, HOUR);
      assert.equal(await f.stores.sessions.get(forgedSid), undefined);
      assert.equal(await f.stores.sessions.extend(forgedSid, f.now() + 2 * HOUR), undefined, 'a forged session cannot be stretched either');

      const c = unique();
      await f.stores.codes.put(c, code(sid), 60_000);
      const forgedCode = unique();
      await f.store.set(`code:${tokenHash(forgedCode)}`, JSON.stringify({ live: code(sid) }), 60_000);
      assert.equal(await f.stores.codes.consume(forgedCode), undefined, 'a code forged in plain JSON is not redeemable');
      await f.store.set(`code:${tokenHash(forgedCode)}`, (await f.store.get(`code:${tokenHash(c)}`))!, 60_000);
      assert.equal(await f.stores.codes.consume(forgedCode), undefined, 'a code record copied under another hash is not redeemable');

      const t = unique();
      await f.stores.refreshTokens.put(t, rt(sid), HOUR);
      const forgedRt = unique();
      await f.store.set(`rt:${tokenHash(forgedRt)}`, JSON.stringify({ record: rt(sid), expiresAt: f.now() + HOUR }), HOUR);
      assert.equal(await f.stores.refreshTokens.peek(forgedRt), undefined);
      assert.equal(await f.stores.refreshTokens.rotate(forgedRt), undefined);

      const clientId = `c-${unique()}`;
      await f.stores.clients.put({ clientId, kind: 'dcr', tokenEndpointAuthMethod: 'none', redirectUris: ['http://127.0.0.1/cb'], grantTypes: ['authorization_code'], createdAt: 1 }, HOUR);
      const clientRaw = (await f.store.get(`client:${clientId}`))!;
      assert.ok(clientRaw.startsWith('v1.k1.') && !clientRaw.includes('127.0.0.1'), 'the client record is sealed');
      await f.store.set(`client:${clientId}`, JSON.stringify({ clientId, kind: 'dcr', tokenEndpointAuthMethod: 'none', redirectUris: ['https://attacker.example/cb'], grantTypes: ['authorization_code'], createdAt: 1 }), HOUR);
      assert.equal(await f.stores.clients.get(clientId), undefined, 'a client record rewritten in plain JSON is not a client');

      await f.store.set(`consent:alice:${clientId}`, JSON.stringify({ scopes: ['mcp'], grantedAt: 1 }), HOUR);
      assert.equal(await f.stores.consents.get('alice', clientId), undefined, 'a forged consent approves nothing');
    });

    test("the user index lists no session id, and still ends every session of the user", async () => {
      const subject = `u-${unique()}`;
      const sids = [`s-ix-${unique()}`, `s-ix-${unique()}`];
      for (const sid of sids) await f.stores.sessions.put(session(sid, subject));
      await f.stores.sessions.extend(sids[0]!, f.now() + 2 * HOUR);
      const members = await f.store.members(`user:${subject}:sessions`);
      assert.equal(members.length, 2, 'one entry per session, an extend adds none');
      for (const member of members) for (const sid of sids) assert.ok(!member.includes(sid), 'an index entry reveals no session id');
      assert.deepEqual((await f.stores.sessions.listForUser(subject)).sort(), [...sids].sort());
      // An entry forged in plain text names nothing and is dropped.
      await f.store.addMembers(`user:${subject}:sessions`, ['s-planted'], HOUR);
      assert.deepEqual((await f.stores.sessions.listForUser(subject)).sort(), [...sids].sort());
      assert.equal((await f.store.members(`user:${subject}:sessions`)).length, 2);
      await f.stores.sessions.revoke(sids[0]!);
      assert.deepEqual(await f.stores.sessions.listForUser(subject), [sids[1]]);
      await f.stores.sessions.revoke(sids[1]!);
      assert.deepEqual(await f.store.members(`user:${subject}:sessions`), []);
    });

    test('the budget of unused registrations is shared: never more admitted than the max, even concurrently', async () => {
      // A window of its own, so the suites on one store do not share counts.
      const windowMs = 3_600_000 + Math.floor(Math.random() * 1_000_000);
      const results = await Promise.all(Array.from({ length: 20 }, () => f.stores.clients.admitUnused({ max: 5, windowMs })));
      const admitted = results.filter((r) => r.admitted).length;
      assert.ok(admitted >= 1 && admitted <= 5, `admitted ${admitted} of 20 with a budget of 5`);
      for (let i = admitted; i < 5; i++) assert.equal((await f.stores.clients.admitUnused({ max: 5, windowMs })).admitted, true);
      const refused = await f.stores.clients.admitUnused({ max: 5, windowMs });
      assert.equal(refused.admitted, false);
      assert.ok(refused.retryAfterMs > 0 && refused.retryAfterMs <= windowMs);
    });

    test('clients and consents round-trip; consent keys of different users never collide', async () => {
      const client = { clientId: `https://agent.example/${unique()}`, kind: 'cimd' as const, tokenEndpointAuthMethod: 'none' as const, redirectUris: ['http://127.0.0.1/cb'], grantTypes: ['authorization_code'], createdAt: 1 };
      await f.stores.clients.put(client, HOUR);
      assert.deepEqual(await f.stores.clients.get(client.clientId), client);
      await f.stores.consents.put('a:b', 'c', { scopes: ['mcp'], grantedAt: 1 }, HOUR);
      assert.equal(await f.stores.consents.get('a', 'b:c'), undefined);
      assert.deepEqual(await f.stores.consents.get('a:b', 'c'), { scopes: ['mcp'], grantedAt: 1 });
    });
  });
}

storesSuite('the memory store', async () => {
  let t = 1_700_000_000_000;
  const now = () => t;
  const store = createMemoryStore({ now });
  return {
    store,
    stores: createAuthStores({ store, sealer, now }),
    now,
    advance: async (ms) => void (t += ms),
  };
});

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.stop();
});

storesSuite('the Valkey store (redis-server)', async () => {
  const store = createValkeyStore({ url: redis.url, keyPrefix: `auth${randomBytes(4).toString('hex')}:`, commandTimeoutMs: 2000 });
  return { store, stores: createAuthStores({ store, sealer }), now: Date.now, advance: (ms) => sleep(ms) };
});
