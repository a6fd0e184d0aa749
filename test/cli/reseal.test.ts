/**
 * Retiring an encryption key as an operator does it, against a real redis-server: sessions are
 * created under key k0, the fleet rolls out with [k1, k0], `mcpgate keys reseal` (the real CLI, a
 * subprocess) rewrites every sealed value under k1 keeping its TTL and swaps every session index
 * entry for one sealed under k1, a second run finds nothing to do, and a gateway configured with
 * k1 alone still serves every session, lists every one (`mcpgate sessions list`) and signs a user
 * out everywhere.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'iovalkey';
import { createApp, type App } from '../../src/app.ts';
import { generateSigningKeyPem } from '../../src/authserver/tokens/keys.ts';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { pkceChallenge, randomToken } from '../../src/authserver/tokens/mint.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { createSealer, type SealingKey } from '../../src/store/sealed.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { createUpstreamStores, type RegistrationKey } from '../../src/upstream-oauth/stores.ts';
import { refusingIdp, postForm } from '../authserver/fixture.ts';
import { freePort } from '../support/gateway.ts';
import { captureLogs } from '../support/logs.ts';
import { startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;
const PREFIX = 'reseal:';
const SESSIONS = 3;
const DAY = 86_400_000;
/** The user of session `i`: user-0 has two sessions (the first and the last), so signing out everywhere has another one to find. */
const subjectOf = (i: number): string => `user-${i === SESSIONS - 1 ? 0 : i}`;

const k0: SealingKey = { id: 'k0', key: randomBytes(32) };
const k1: SealingKey = { id: 'k1', key: randomBytes(32) };
const kx: SealingKey = { id: 'kx', key: randomBytes(32) };
const ENV = {
  STORE_KEY_0: Buffer.from(k0.key).toString('base64'),
  STORE_KEY_1: Buffer.from(k1.key).toString('base64'),
};

let redis: RedisServer;
let upstream: RawUpstream;
let raw: Redis;
let dir: string;
let port: number;

before(async () => {
  redis = await startRedis();
  upstream = await startRawUpstream();
  raw = new Redis(redis.url);
  dir = mkdtempSync(join(tmpdir(), 'mcpgate-reseal-'));
  writeFileSync(join(dir, 'signing.pem'), generateSigningKeyPem());
  port = await freePort();
});
after(async () => {
  raw?.disconnect();
  await upstream?.close();
  await redis?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A config file as an operator writes it: Valkey, the given encryption keys (env refs), one `idp` upstream. */
function configFile(name: string, keyIds: Array<'k0' | 'k1'>, storage?: string): string {
  const keys = keyIds.map((id) => `{ id: "${id}", key: "env:STORE_KEY_${id.slice(1)}" }`).join(', ');
  const path = join(dir, name);
  writeFileSync(
    path,
    [
      'server:',
      `  listen: "127.0.0.1:${port}"`,
      `  publicUrl: "http://127.0.0.1:${port}"`,
      '  devMode: true',
      '  drainTimeout: "1s"',
      'idp: { issuer: "http://127.0.0.1:9/unused", clientId: "mcpgate" }',
      `authServer: { signingKeys: ["file:${join(dir, 'signing.pem')}"] }`,
      'storage:',
      storage ?? `  kind: valkey\n  valkey: { url: "${redis.url}/0", keyPrefix: "${PREFIX}" }\n  encryptionKeys: [${keys}]`,
      'upstreams:',
      `  - { name: kube, url: "${upstream.url}", auth: { mode: idp } }`,
      '',
    ].join('\n'),
  );
  return path;
}

async function startApp(path: string): Promise<App> {
  const config = loadConfigFile(path, { env: ENV, readFile: (p) => readFileSync(p, 'utf8') });
  const app = createApp(config, { logDestination: captureLogs().destination, idpClient: refusingIdp });
  await app.listen({ host: '127.0.0.1', port });
  return app;
}

/** `node src/cli.ts …` to completion. */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...ENV }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

/** The count printed on the report line `label:` of the sealed values' section. */
function count(stdout: string, label: string): number {
  const match = new RegExp(`^\\s+${label}:\\s+(\\d+)`, 'm').exec(stdout.slice(stdout.indexOf('sealed values:')));
  assert.ok(match, `the report has a "${label}" line:\n${stdout}`);
  return Number(match[1]);
}

/** The count printed on the report line `label:` of the session index entries' section. */
function indexCount(stdout: string, label: string): number {
  const at = stdout.indexOf('session index entries:');
  assert.ok(at >= 0, `the report has a session index section:\n${stdout}`);
  const match = new RegExp(`^\\s+${label}:\\s+(\\d+)`, 'm').exec(stdout.slice(at));
  assert.ok(match, `the session index section has a "${label}" line:\n${stdout}`);
  return Number(match[1]);
}

/** Every member of every set under the prefix, by set name (without the prefix). */
async function setMembers(): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  let cursor = '0';
  do {
    const [next, keys] = await raw.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 1000, 'TYPE', 'set');
    cursor = next;
    for (const key of keys) out.set(key.slice(PREFIX.length), await raw.smembers(key));
  } while (cursor !== '0');
  return out;
}

/** The members of the session indexes (the user indexes and `sessions`), with the key id each is sealed under. */
async function indexEntries(): Promise<Array<{ set: string; keyId: string | undefined }>> {
  const entries: Array<{ set: string; keyId: string | undefined }> = [];
  for (const [set, members] of await setMembers()) {
    if (set !== 'sessions' && !/^user:.*:sessions$/.test(set)) continue;
    for (const member of members) entries.push({ set, keyId: sealedUnder(member) });
  }
  return entries;
}

/** Every string key under the prefix with its raw value and remaining TTL, as `redis-cli` would show them. */
async function dump(): Promise<Map<string, { value: string; pttl: number }>> {
  const out = new Map<string, { value: string; pttl: number }>();
  let cursor = '0';
  do {
    const [next, keys] = await raw.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 1000, 'TYPE', 'string');
    cursor = next;
    for (const key of keys) {
      const value = await raw.get(key);
      if (value !== null) out.set(key, { value, pttl: await raw.pttl(key) });
    }
  } while (cursor !== '0');
  return out;
}

const sealedUnder = (value: string): string | undefined => /^v1\.([A-Za-z0-9_-]+)\./.exec(value)?.[1];

/** An MCP ping through the gateway path; resolves with the Authorization header the upstream saw. */
async function upstreamSees(accessToken: string): Promise<string | undefined> {
  const before = upstream.requests.length;
  const res = await fetch(`http://127.0.0.1:${port}/kube/mcp`, {
    method: 'POST',
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
  });
  await res.arrayBuffer();
  assert.equal(res.status, 200);
  const header = upstream.requests.at(-1)?.headers.authorization;
  assert.equal(upstream.requests.length, before + 1);
  return header;
}

describe('mcpgate keys reseal', () => {
  const sessions: Array<{ accessToken: string; refreshToken: string; idpAccessToken: string; sessionId: string; subject: string }> = [];
  const registration: RegistrationKey = { ourIssuer: 'https://gw', issuer: 'https://as.example', redirectUri: 'https://gw/cb', scopes: ['repo'] };
  let before: Map<string, { value: string; pttl: number }>;
  const clientId = randomToken(12);

  test('sessions sealed under k0 are resealed under k1 while a replica with [k1, k0] serves, keeping their TTLs', async () => {
    // 1. The fleet on k0: logins whose IdP tokens and upstream grants are sealed under k0.
    const appK0 = await startApp(configFile('k0.yaml', ['k0']));
    const store = createValkeyStore({ url: redis.url, keyPrefix: PREFIX });
    try {
      const auth = createAuthStores({ store, sealer: createSealer({ keys: [k0] }) });
      const upstreamStores = createUpstreamStores({ store, sealer: createSealer({ keys: [k0] }), tokenTtlMs: 7 * DAY });
      const redirectUri = 'http://127.0.0.1:33418/callback';
      await auth.clients.put({ clientId, kind: 'dcr', tokenEndpointAuthMethod: 'none', redirectUris: [redirectUri], grantTypes: ['authorization_code', 'refresh_token'], createdAt: Date.now() }, DAY);
      for (let i = 0; i < SESSIONS; i++) {
        // What /oauth/callback leaves behind, then the agent's code exchange at the gateway.
        const sessionId = randomToken(16);
        const verifier = randomBytes(32).toString('base64url');
        const code = randomToken(32);
        const idpAccessToken = `idp-at-${i}-${randomToken(8)}`;
        await auth.sessions.put({ sessionId, subject: subjectOf(i), clientId, createdAt: Date.now() + i, expiresAt: Date.now() + 30 * DAY });
        await auth.idpTokens.put(sessionId, { accessToken: idpAccessToken, refreshToken: `idp-rt-${i}`, expiresAt: Date.now() + 3_600_000 }, 30 * DAY);
        await auth.codes.put(code, { clientId, redirectUri, codeChallenge: pkceChallenge(verifier), resource: `http://127.0.0.1:${port}/kube/mcp`, scopes: ['mcp'], subject: subjectOf(i), sessionId, createdAt: Date.now() }, 60_000);
        const res = await postForm(`http://127.0.0.1:${port}/oauth/token`, { grant_type: 'authorization_code', client_id: clientId, code, redirect_uri: redirectUri, code_verifier: verifier, resource: `http://127.0.0.1:${port}/kube/mcp` });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        sessions.push({ accessToken: String(res.body.access_token), refreshToken: String(res.body.refresh_token), idpAccessToken, sessionId, subject: subjectOf(i) });
        await upstreamStores.tokens.put(sessionId, {
          upstream: 'github',
          resource: 'https://api.example/mcp',
          server: { issuer: 'https://as.example', authorizationEndpoint: 'https://as.example/authorize', tokenEndpoint: 'https://as.example/token', issParameterSupported: true },
          client: { clientId: 'gw-client', clientSecret: `secret-${i}`, authMethod: 'client_secret_basic', source: 'dcr' },
          scopes: ['repo'],
          accessToken: `gh-at-${i}`,
          refreshToken: `gh-rt-${i}`,
          obtainedAt: Date.now(),
        });
      }
      await upstreamStores.registrations.put(registration, { clientId: 'gw-client', clientSecret: 'dcr-secret', authMethod: 'client_secret_basic', registeredAt: Date.now() });
      // A session of user-1 that ended without its index entries being removed (a revoke cut short):
      // two entries under k0 that name no live session.
      const ended = randomToken(16);
      await auth.sessions.put({ sessionId: ended, subject: 'user-1', clientId, createdAt: Date.now(), expiresAt: Date.now() + DAY });
      await store.delete(`session:{${ended}}`);
      for (const s of sessions) assert.equal(await upstreamSees(s.accessToken), `Bearer ${s.idpAccessToken}`);
    } finally {
      await appK0.close();
      await store.close();
    }

    before = await dump();
    const sealedBefore = [...before.values()].filter((v) => sealedUnder(v.value) !== undefined);
    // Per session at least its record, its IdP tokens, its refresh token and its upstream token row;
    // plus the client and the one DCR registration (every authorization-server record is sealed).
    const sealedCount = sealedBefore.length;
    assert.ok(sealedCount >= 4 * SESSIONS + 2, `${sealedCount} sealed values`);
    assert.ok(sealedBefore.every((v) => sealedUnder(v.value) === 'k0'));
    // Unsealed: what names nobody's secret (rate-limit counters, the per-session client facts).
    const notSealed = before.size - sealedBefore.length;
    // The indexes: each session's entry in its user's index and in the index of every session, plus the ended session's two.
    const entriesBefore = await indexEntries();
    assert.equal(entriesBefore.length, 2 * SESSIONS + 2);
    assert.ok(entriesBefore.every((e) => e.keyId === 'k0'));

    // 2. The rollout: every replica now seals under k1 and still opens k0. One keeps serving during the reseal.
    const both = configFile('both.yaml', ['k1', 'k0']);
    const serving = await startApp(both);
    try {
      const run = await cli(['keys', 'reseal', '--config', both]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(count(run.stdout, 'resealed'), sealedCount);
      assert.equal(count(run.stdout, 'already current'), 0);
      assert.equal(count(run.stdout, 'not sealed'), notSealed);
      assert.equal(count(run.stdout, 'unreadable'), 0);
      assert.equal(count(run.stdout, 'changed meanwhile'), 0);
      assert.equal(count(run.stdout, 'scanned'), before.size, 'keys holding a value');
      // The index entries are swapped, not skipped: each session's two, and the ended session's removed.
      assert.equal(indexCount(run.stdout, 'sessions'), SESSIONS);
      assert.equal(indexCount(run.stdout, 'resealed'), 2 * SESSIONS);
      assert.equal(indexCount(run.stdout, 'already current'), 0);
      assert.equal(indexCount(run.stdout, 'stale removed'), 2);
      assert.equal(indexCount(run.stdout, 'changed meanwhile'), 0);
      assert.equal(indexCount(run.stdout, 'unreadable'), 0);
      assert.match(run.stdout, /every sealed value and session index entry is under "k1"/);
      const entriesAfter = await indexEntries();
      assert.equal(entriesAfter.length, 2 * SESSIONS, 'one entry per session in each index: no leftover, none lost');
      assert.ok(entriesAfter.every((e) => e.keyId === 'k1'), 'no index entry is left under k0');
      for (const s of sessions) {
        assert.ok(!run.stdout.includes(s.sessionId) && !run.stderr.includes(s.sessionId), 'no key name is printed');
        assert.ok(!run.stdout.includes(s.idpAccessToken), 'no value is printed');
      }

      const afterRun = await dump();
      const membersAfterRun = await setMembers();
      for (const [key, { value, pttl }] of before) {
        const now = afterRun.get(key);
        assert.ok(now, `${key} is still there`);
        if (sealedUnder(value) === undefined) {
          assert.equal(now.value, value, 'unsealed values are left alone');
          continue;
        }
        assert.equal(sealedUnder(now.value), 'k1', `${key} is now sealed under k1`);
        assert.notEqual(now.value, value);
        assert.ok(now.pttl > 0, `${key} still expires (PTTL ${now.pttl})`);
        assert.ok(now.pttl <= pttl, `${key} kept its deadline: ${now.pttl} ms left, ${pttl} ms before`);
        assert.ok(now.pttl > pttl - 60_000, `${key} did not lose its lifetime: ${now.pttl} ms left, ${pttl} ms before`);
      }
      // The serving replica reads what the command rewrote.
      for (const s of sessions) assert.equal(await upstreamSees(s.accessToken), `Bearer ${s.idpAccessToken}`);

      // 3. Idempotent: a second run has nothing left to do.
      const again = await cli(['keys', 'reseal', '--config', both]);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(count(again.stdout, 'resealed'), 0);
      assert.ok(count(again.stdout, 'already current') >= sealedCount);
      assert.equal(indexCount(again.stdout, 'resealed'), 0);
      assert.equal(indexCount(again.stdout, 'stale removed'), 0);
      assert.equal(indexCount(again.stdout, 'already current'), 2 * SESSIONS);
      const afterAgain = await dump();
      for (const [key, { value }] of afterRun) assert.equal(afterAgain.get(key)?.value, value, `${key} untouched by the second run`);
      assert.deepEqual(await setMembers(), membersAfterRun, 'the indexes untouched by the second run');
    } finally {
      await serving.close();
    }
  });

  test('with k0 removed from the config, every session still works, is listed, and is ended by signing out everywhere', async () => {
    assert.equal(sessions.length, SESSIONS, 'runs after the reseal');
    const onlyK1 = configFile('k1.yaml', ['k1']);
    const app = await startApp(onlyK1);
    const store = createValkeyStore({ url: redis.url, keyPrefix: PREFIX });
    try {
      const refreshedTokens: string[] = [];
      for (const s of sessions) {
        // The IdP tokens open under k1: the gateway path forwards them.
        assert.equal(await upstreamSees(s.accessToken), `Bearer ${s.idpAccessToken}`);
        const refreshed = await postForm(`http://127.0.0.1:${port}/oauth/token`, { grant_type: 'refresh_token', client_id: clientId, refresh_token: s.refreshToken });
        assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
        refreshedTokens.push(String(refreshed.body.access_token));
        assert.equal(await upstreamSees(refreshedTokens.at(-1)!), `Bearer ${s.idpAccessToken}`);
      }
      const upstreamStores = createUpstreamStores({ store, sealer: createSealer({ keys: [k1] }) });
      for (const [i, s] of sessions.entries()) assert.equal((await upstreamStores.tokens.get(s.sessionId, 'github'))?.refreshToken, `gh-rt-${i}`);
      assert.equal((await upstreamStores.registrations.get(registration))?.clientSecret, 'dcr-secret');

      // The indexes open under k1 alone: every session created under k0 is still found.
      const auth = createAuthStores({ store, sealer: createSealer({ keys: [k1] }) });
      assert.deepEqual((await auth.sessions.listAll()).sort(), sessions.map((s) => s.sessionId).sort());
      const ofUser0 = sessions.filter((s) => s.subject === 'user-0');
      assert.equal(ofUser0.length, 2);
      assert.deepEqual((await auth.sessions.listForUser('user-0')).sort(), ofUser0.map((s) => s.sessionId).sort());
      const listed = await cli(['sessions', 'list', '--config', onlyK1]);
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(listed.stdout, new RegExp(`^${SESSIONS} sessions$`, 'm'));
      for (const s of sessions) assert.ok(listed.stdout.includes(s.sessionId.slice(0, 8)), 'every session is listed');
      const ofUser = await cli(['sessions', 'list', '--user', 'user-0', '--config', onlyK1]);
      assert.match(ofUser.stdout, /^2 sessions of user-0$/m);

      // Signing out everywhere from user-0's first session ends her second one too (found only through her index).
      const res = await fetch(`http://127.0.0.1:${port}/oauth/logout/all`, { method: 'POST', headers: { authorization: `Bearer ${refreshedTokens[0]}` } });
      assert.equal(res.status, 204);
      for (const s of ofUser0) assert.equal(await auth.sessions.get(s.sessionId), undefined, 'user-0’s sessions are ended');
      const other = sessions.findIndex((s) => s.subject !== 'user-0');
      assert.ok(await auth.sessions.get(sessions[other]!.sessionId), 'another user’s session is untouched');
      assert.equal(await upstreamSees(refreshedTokens[other]!), `Bearer ${sessions[other]!.idpAccessToken}`);
      assert.deepEqual(await auth.sessions.listForUser('user-0'), []);
      const entries = await indexEntries();
      assert.equal(entries.length, 2 * (SESSIONS - 2), 'the ended sessions left no entry behind');
      assert.ok(entries.every((e) => e.keyId === 'k1'));
    } finally {
      await store.close();
      await app.close();
    }
  });

  test('a value no configured key opens is counted, named by key id only, left alone, and fails the run', async () => {
    const name = `idp:{ghost-${randomToken(8)}}`;
    const sealed = createSealer({ keys: [kx] }).seal(name, JSON.stringify({ accessToken: 'ghost-token' }));
    await raw.set(PREFIX + name, sealed, 'PX', 60_000);
    try {
      const run = await cli(['keys', 'reseal', '--config', join(dir, 'k1.yaml')]);
      assert.equal(run.code, 1);
      assert.equal(count(run.stdout, 'unreadable'), 1);
      assert.equal(count(run.stdout, 'resealed'), 0);
      assert.match(run.stdout, /1 under key id "kx"/);
      assert.match(run.stderr, /1 value could not be opened by any configured key/);
      assert.ok(!`${run.stdout}${run.stderr}`.includes('ghost'), 'neither the key name nor the value is printed');
      assert.equal(await raw.get(PREFIX + name), sealed, 'left as it was');
    } finally {
      await raw.del(PREFIX + name);
    }
  });

  test('memory storage: nothing to reseal, exit 0', async () => {
    const run = await cli(['keys', 'reseal', '--config', configFile('memory.yaml', [], '  kind: memory')]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /storage\.kind is memory.*nothing to reseal/);
  });

  test('an unreachable Valkey fails the run with a clear message', async () => {
    const path = configFile('down.yaml', ['k1'], `  kind: valkey\n  valkey: { url: "redis://127.0.0.1:${await freePort()}/0", keyPrefix: "${PREFIX}" }\n  encryptionKeys: [{ id: "k1", key: "env:STORE_KEY_1" }]`);
    const run = await cli(['keys', 'reseal', '--config', path]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /valkey did not become ready/);
  });
});

test('mcpgate check names every storage.valkey problem with its path', async () => {
  const path = join(dir, 'bad-valkey.yaml');
  writeFileSync(
    path,
    'server: { publicUrl: "https://mcp.example.com" }\n' +
      'storage:\n  kind: valkey\n  valkey: { url: "redis://valkey:6379/0", cluster: { nodes: ["valkey-0"] }, tls: { cert: "file:/nonexistent/client.crt" } }\n' +
      '  encryptionKeys: [{ id: k1, key: "env:STORE_KEY_1" }]\n' +
      'upstreams: [{ name: kube, url: "http://kube:8080/mcp" }]\n',
  );
  const run = await cli(['check', '--config', path]);
  assert.equal(run.code, 1);
  assert.match(run.stderr, /storage\.valkey: url, sentinel and cluster are alternatives: set exactly one \(found url, cluster\)/);
  assert.match(run.stderr, /storage\.valkey\.cluster\.nodes\[0\]: must be host:port/);
  assert.match(run.stderr, /storage\.valkey\.tls\.cert: cannot read \/nonexistent\/client\.crt/);
  assert.match(run.stderr, /storage\.valkey\.tls: cert and key go together/);
  assert.match(run.stderr, /storage\.valkey\.url: is a plain-text URL but tls: is set/);
});
