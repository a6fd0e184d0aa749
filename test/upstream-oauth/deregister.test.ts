/**
 * Our registrations at an upstream's authorization server, managed (RFC 7592), against the real
 * oidc-provider upstream AS with registration management on:
 * - the registration access token and client URI it returns are kept, sealed;
 * - a registration the AS deleted behind our back (`invalid_client` at its token endpoint) is
 *   forgotten and registered again — once, however many users meet it;
 * - `mcpgate upstreams deregister NAME` (the real CLI, against a real redis-server) deletes our
 *   registration at the AS and forgets it in the store.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { generateStoreKey } from '../../src/authserver/tokens/keys.ts';
import { createGuardedFetch } from '../../src/net/guarded-fetch.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { createClientRegistration } from '../../src/upstream-oauth/client-registration.ts';
import { createDiscovery } from '../../src/upstream-oauth/discovery.ts';
import { createUpstreamStores } from '../../src/upstream-oauth/stores.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';
import { authRequiredOf, sessionOf, startHarness, toolText, type Harness, type TestUser } from './harness.ts';

const run = promisify(execFile);
const NODE = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

describe('a registration the upstream AS forgot', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ registration: 'dcr' });
  });
  after(() => h?.close());

  const call = (user: TestUser) => h.rpc(user, 'tools/call', { name: 'whoami', arguments: {} });
  async function connect(subject: string, user = sessionOf(subject)): Promise<TestUser> {
    const authUrl = authRequiredOf(await call(user)).auth_url;
    const page = await h.connect(h.browser(user), authUrl, { login: `${subject}-up` });
    assert.equal(page.status, 200, page.body);
    // Used once, so the upstream can later be told to refuse it (rejectIssuedTokens).
    assert.equal(toolText(await call(user)), `upstream user ${subject}-up`);
    return user;
  }

  test('keeps the registration access token and client URI, sealed', async () => {
    await connect('alice');
    const [entry, ...more] = await h.stores.registrations.atIssuer(h.publicUrl, h.upstream.issuer);
    assert.equal(more.length, 0);
    assert.ok(entry!.registration.registrationAccessToken, 'registration access token kept');
    assert.ok(entry!.registration.registrationClientUri!.startsWith(`${h.upstream.issuer}/`), 'registration client URI kept');
    assert.ok(await h.upstream.knowsClient(entry!.registration.clientId));
    const raw = await h.store.get(`udcr:${entry!.id}`);
    assert.ok(raw && !raw.includes(entry!.registration.registrationAccessToken!), 'stored sealed');
  });

  test('deleted behind our back: the refresh meets invalid_client, the next flow registers once, for everyone', async () => {
    const alice = await connect('alice');
    const bob = await connect('bob');
    const old = (await h.stores.registrations.atIssuer(h.publicUrl, h.upstream.issuer))[0]!.registration;
    const registered = h.upstream.registrations();
    await h.upstream.deleteClient(old.clientId);
    assert.equal(await h.upstream.knowsClient(old.clientId), false);
    h.upstream.rejectIssuedTokens();

    // alice's grant was issued to the deleted client: it cannot be refreshed; she is asked to connect again.
    const authUrl = authRequiredOf(await call(alice)).auth_url;
    assert.equal(await h.flows.token(alice.sessionId, 'notes'), undefined);
    assert.equal(h.upstream.registrations(), registered + 1, 'the new flow registered again');
    const page = await h.connect(h.browser(alice), authUrl, { login: 'alice-up' });
    assert.equal(page.status, 200, page.body);
    assert.equal(toolText(await call(alice)), 'upstream user alice-up');

    // bob meets the same dead client afterwards: the new registration is reused, not made again.
    authRequiredOf(await call(bob));
    assert.equal(h.upstream.registrations(), registered + 1, 'registered once');
    const now = await h.stores.registrations.atIssuer(h.publicUrl, h.upstream.issuer);
    assert.equal(now.length, 1);
    assert.notEqual(now[0]!.registration.clientId, old.clientId);
    assert.ok(await h.upstream.knowsClient(now[0]!.registration.clientId));
  });
});

describe('mcpgate upstreams deregister', () => {
  let redis: RedisServer;
  let upstream: UpstreamWithAs;
  let dir: string;
  let configPath: string;
  const storeKey = generateStoreKey();
  const publicUrl = 'http://127.0.0.1:1';

  before(async () => {
    [redis, upstream] = await Promise.all([startRedis(), startUpstreamWithAs({ registration: 'dcr' })]);
    dir = mkdtempSync(join(tmpdir(), 'mcpgate-dereg-'));
    configPath = join(dir, 'mcpgate.yaml');
    writeFileSync(
      configPath,
      JSON.stringify({
        server: { publicUrl, devMode: true },
        idp: { issuer: 'http://127.0.0.1:2', clientId: 'mcpgate' },
        storage: { kind: 'valkey', valkey: { url: redis.url, keyPrefix: 'dereg:' }, encryptionKeys: [{ id: 'k1', key: 'env:STORE_KEY' }] },
        upstreams: [
          { name: 'notes', url: upstream.mcpUrl, auth: { mode: 'oauth' } },
          { name: 'plain', url: upstream.mcpUrl },
        ],
      }),
    );
  });
  after(async () => {
    await upstream?.close();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cli = (...args: string[]) =>
    run(NODE, [CLI, 'upstreams', ...args, '--config', configPath], { env: { ...process.env, STORE_KEY: storeKey }, timeout: 60_000 }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );

  test('deletes our registration at the AS and forgets it; a second run has nothing to do', async () => {
    // Registered as a replica of this gateway does it (same store, key, public URL).
    const store = createValkeyStore({ url: redis.url, keyPrefix: 'dereg:' });
    const stores = createUpstreamStores({ store, sealer: createSealer({ keys: [{ id: 'k1', key: Buffer.from(storeKey, 'base64') }] }) });
    const fetch = createGuardedFetch({ allowHttp: true, allowPrivate: true });
    try {
      const server = await createDiscovery({ fetch, allowHttp: true }).discoverAuthorizationServer(upstream.issuer);
      const client = await createClientRegistration({ fetch, stores, publicUrl }).clientFor({ upstream: { name: 'notes' }, server, scopes: ['notes:read'] });
      assert.ok(await upstream.knowsClient(client.clientId));

      const done = await cli('deregister', 'notes');
      assert.equal(done.code, 0, done.stderr);
      assert.equal(
        done.stdout,
        `deleted client ${client.clientId} at ${upstream.issuer} and forgot it\n` + 'upstream "notes": 1 of 1 registration removed; users connect again on their next request\n',
      );
      assert.equal(await upstream.knowsClient(client.clientId), false, 'the AS no longer knows the client');
      assert.deepEqual(await stores.registrations.atIssuer(publicUrl, upstream.issuer), []);

      const again = await cli('deregister', 'notes');
      assert.equal(again.code, 0, again.stderr);
      assert.equal(again.stdout, `upstream "notes": no registration of this gateway at ${upstream.issuer} is on record; nothing to do\n`);
    } finally {
      await store.close();
      await fetch.close();
    }
  });

  test('refuses names that are not oauth upstreams', async () => {
    const unknown = await cli('deregister', 'nope');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no upstream named "nope"/);
    const plain = await cli('deregister', 'plain');
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /mode none; only mode oauth registers/);
    const usage = await cli('remove', 'notes');
    assert.equal(usage.code, 2);
  });
});
