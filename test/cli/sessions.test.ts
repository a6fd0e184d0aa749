/**
 * Operators' control of sessions, as an operator does it: two gateway replicas share a real
 * redis-server; users log in for real (SDK agent, Chromium, the development IdP) and alice
 * connects an upstream with its own authorization server; `mcpgate sessions list` and
 * `mcpgate sessions revoke` (the real CLI, a subprocess, against the same store while both
 * replicas serve) show and end the sessions: both replicas refuse the tokens on the very next
 * request, and the upstream grant is revoked at the upstream's authorization server.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { decodeJwt } from 'jose';
import type { Browser } from 'playwright-core';
import { createApp, type App } from '../../src/app.ts';
import { generateSigningKeyPem, generateStoreKey } from '../../src/authserver/tokens/keys.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { createUpstreamStores } from '../../src/upstream-oauth/stores.ts';
import { startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { approveAtUpstream, closeChromium, confirmConnect, connectWithLogin, createBrowserAgent, launchChromium, newBrowserContext, type BrowserAgent } from '../support/browser-agent.ts';
import { freePort } from '../support/gateway.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { captureLogs } from '../support/logs.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';

const run = promisify(execFile);
const NODE = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

let redis: RedisServer;
let idp: DevIdp;
let notes: UpstreamWithAs;
let catcher: RecordingServer;
let browser: Browser;
let dir: string;
let configPath: string;
const apps: App[] = [];
let bases: string[] = [];
const env = { STORE_KEY: generateStoreKey(), IDP_SECRET: '' };

/** The real CLI against the shared store. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(NODE, [CLI, ...args, '--config', configPath], { env: { ...process.env, ...env }, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** POST initialize with a bearer token to a replica: its status. */
async function statusAt(base: string, token: string): Promise<number> {
  const res = await fetch(`${base}/notes/mcp`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'probe', version: '1' } } }),
  });
  await res.body?.cancel();
  return res.status;
}

before(async () => {
  [redis, idp, notes, catcher] = await Promise.all([startRedis(), startDevIdp(), startUpstreamWithAs({ registration: 'dcr', openHandshake: true }), startRecordingServer()]);
  env.IDP_SECRET = idp.clientSecret;
  dir = mkdtempSync(join(tmpdir(), 'mcpgate-sessions-'));
  writeFileSync(join(dir, 'signing.pem'), generateSigningKeyPem());
  const ports = [await freePort(), await freePort()];
  bases = ports.map((p) => `http://127.0.0.1:${p}`);
  const config = (port: number) => ({
    server: { listen: `127.0.0.1:${port}`, publicUrl: bases[0], devMode: true, drainTimeout: '1s' },
    idp: { issuer: idp.issuer, clientId: idp.clientId, clientSecret: 'env:IDP_SECRET' },
    authServer: { signingKeys: [`file:${join(dir, 'signing.pem')}`] },
    storage: { kind: 'valkey', valkey: { url: redis.url, keyPrefix: 'ops:' }, encryptionKeys: [{ id: 'k1', key: 'env:STORE_KEY' }] },
    upstreams: [{ name: 'notes', url: notes.mcpUrl, auth: { mode: 'oauth', challenge: 'tool_result' } }],
  });
  // JSON is YAML: the CLI reads the very config replica A serves with.
  configPath = join(dir, 'mcpgate.yaml');
  writeFileSync(configPath, JSON.stringify(config(ports[0]!)));
  for (const port of ports) {
    const file = join(dir, `replica-${port}.yaml`);
    writeFileSync(file, JSON.stringify(config(port)));
    const app = createApp(loadConfigFile(file, { env, readFile: (path) => readFileSync(path, 'utf8') }), { logDestination: captureLogs().destination });
    await app.listen({ host: '127.0.0.1', port });
    apps.push(app);
  }
  browser = await launchChromium();
});
after(async () => {
  await closeChromium(browser);
  await Promise.all(apps.map((a) => a.close()));
  await Promise.all([notes?.close(), catcher?.close(), idp?.close()]);
  await redis?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const userOf = (login: string) => {
  const user = idp.users.find((u) => u.login === login)!;
  return { login: user.login, password: user.password };
};

describe('mcpgate sessions, while two replicas serve', () => {
  let alice: BrowserAgent;
  let bob: BrowserAgent;
  let aliceClient: Client;
  let bobClient: Client;
  let aliceSid: string;
  let bobSid: string;
  let aliceGrant: { accessToken: string; refreshToken?: string };

  before(async () => {
    const context = await newBrowserContext(browser);
    alice = createBrowserAgent({ context, user: userOf('alice'), redirectUri: `${catcher.url}/callback` });
    ({ client: aliceClient } = await connectWithLogin(alice, new URL(`${bases[0]}/notes/mcp`)));
    // alice connects the upstream: auth_required, then its link in her browser.
    const challenged = await aliceClient.callTool({ name: 'whoami', arguments: {} });
    const page = await context.newPage();
    await page.goto((challenged.structuredContent as { auth_url: string }).auth_url);
    await confirmConnect(page, 'alice');
    await approveAtUpstream(page, 'alice-up');
    await page.waitForURL(`${bases[0]}/oauth/upstream/callback?**`);
    assert.deepEqual((await aliceClient.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'upstream user alice-up' }]);

    bob = createBrowserAgent({ context: await newBrowserContext(browser), user: userOf('bob'), redirectUri: `${catcher.url}/callback` });
    ({ client: bobClient } = await connectWithLogin(bob, new URL(`${bases[0]}/notes/mcp`)));
    aliceSid = String(decodeJwt(alice.tokens()!.access_token).sid);
    bobSid = String(decodeJwt(bob.tokens()!.access_token).sid);

    // The test's own view of the shared store: alice's upstream grant, to find it among the revocations.
    const store = createValkeyStore({ url: redis.url, keyPrefix: 'ops:' });
    const row = await createUpstreamStores({ store, sealer: createSealer({ keys: [{ id: 'k1', key: Buffer.from(env.STORE_KEY, 'base64') }] }) }).tokens.get(aliceSid, 'notes');
    await store.close();
    assert.ok(row, 'alice holds an upstream grant');
    aliceGrant = row;
  });
  after(async () => {
    await aliceClient?.close().catch(() => undefined);
    await bobClient?.close().catch(() => undefined);
  });

  test('list: every session, then one user\'s; ids cut to 8 characters', async () => {
    const all = await cli('sessions', 'list');
    assert.equal(all.code, 0, all.stderr);
    const lines = all.stdout.trim().split('\n');
    assert.match(lines[0]!, /^USER\s+SESSION\s+CLIENT\s+CREATED\s+EXPIRES$/);
    assert.equal(lines.at(-1), '2 sessions');
    const row = (line: string) => line.split(/\s+/);
    const rows = lines.slice(1, -1).map(row);
    assert.deepEqual(rows.map((r) => [r[0], r[1]]).sort(), [['alice', aliceSid.slice(0, 8)], ['bob', bobSid.slice(0, 8)]]);
    for (const r of rows) {
      assert.match(r[3]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      assert.ok(Date.parse(r[4]!) > Date.parse(r[3]!));
    }
    assert.equal(rows.find((r) => r[0] === 'alice')![2], alice.clientInformation()!.client_id);
    assert.ok(!all.stdout.includes(aliceSid) && !all.stdout.includes(bobSid), 'no full session id is printed');

    const mine = await cli('sessions', 'list', '--user', 'alice');
    assert.equal(mine.code, 0, mine.stderr);
    assert.equal(mine.stdout.trim().split('\n').length, 3);
    assert.match(mine.stdout, /\n1 session of alice\n$/);
  });

  test('revoke --user: both replicas refuse the token at once, the upstream grant is revoked upstream, others are untouched', async () => {
    const token = alice.tokens()!.access_token;
    assert.deepEqual([await statusAt(bases[0]!, token), await statusAt(bases[1]!, token)], [200, 200]);
    const revocationsBefore = notes.revocations.length;

    const done = await cli('sessions', 'revoke', '--user', 'alice');
    assert.equal(done.code, 0, done.stderr);
    assert.equal(
      done.stdout,
      `ended ${aliceSid.slice(0, 8)} (user alice, client ${alice.clientInformation()!.client_id}): 1 upstream grant, 1 revoked at the upstream\n` +
        'revoked 1 session of alice; 1 upstream grant forgotten, 1 revoked at its authorization server\n',
    );
    // The very next request, on either replica: no cache keeps the session alive.
    assert.deepEqual([await statusAt(bases[0]!, token), await statusAt(bases[1]!, token)], [401, 401]);
    const revoked = notes.revocations.slice(revocationsBefore);
    assert.equal(revoked.length, 1);
    assert.equal(revoked[0]!.tokenSha256, notes.digest(aliceGrant.refreshToken ?? aliceGrant.accessToken));
    // Her refresh token is dead too: the session is over, not just the access token.
    const refreshed = await fetch(`${bases[1]}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: alice.tokens()!.refresh_token!, client_id: alice.clientInformation()!.client_id }),
    });
    assert.equal(refreshed.status, 400);
    assert.equal(((await refreshed.json()) as { error: string }).error, 'invalid_grant');

    assert.equal(await statusAt(bases[1]!, bob.tokens()!.access_token), 200, 'bob is not affected');
    const after = await cli('sessions', 'list');
    assert.match(after.stdout, /\n1 session\n$/);
    assert.doesNotMatch(after.stdout, /alice/);
  });

  test('revoke --session with the printed prefix; unknown and ambiguous input is refused', async () => {
    const none = await cli('sessions', 'revoke', '--session', 'zzzzzzzzzz');
    assert.equal(none.code, 1);
    assert.equal(none.stderr, 'mcpgate sessions revoke: no live session matching zzzzzzzz\n');
    const short = await cli('sessions', 'revoke', '--session', 'abc');
    assert.equal(short.code, 2);
    const both = await cli('sessions', 'revoke', `--session=${bobSid.slice(0, 8)}`, '--user', 'bob');
    assert.equal(both.code, 2);
    assert.match(both.stderr, /exactly one of --user and --session/);

    const done = await cli('sessions', 'revoke', `--session=${bobSid.slice(0, 8)}`);
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, new RegExp(`^ended ${bobSid.slice(0, 8)} \\(user bob, client [^)]+\\): 0 upstream grants, 0 revoked at the upstream\\nrevoked 1 session matching ${bobSid.slice(0, 8)}; 0 upstream grants forgotten, 0 revoked at their authorization servers\\n$`));
    assert.deepEqual([await statusAt(bases[0]!, bob.tokens()!.access_token), await statusAt(bases[1]!, bob.tokens()!.access_token)], [401, 401]);
    assert.match((await cli('sessions', 'list')).stdout, /\n0 sessions\n$/);
  });
});

describe('mcpgate sessions with memory storage', () => {
  test('says why it cannot reach the sessions', async () => {
    const file = join(dir, 'memory.yaml');
    writeFileSync(file, JSON.stringify({ server: { publicUrl: 'http://127.0.0.1:1', devMode: true }, upstreams: [{ name: 'a', url: 'http://127.0.0.1:2/mcp' }] }));
    const { stderr, code } = await run(NODE, [CLI, 'sessions', 'list', '--config', file]).then(
      (r) => ({ ...r, code: 0 }),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(code, 1);
    assert.match(stderr, /storage\.kind is memory: .* need storage\.kind: valkey/);
  });
});
