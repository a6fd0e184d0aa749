/**
 * Client ID Metadata Documents: a real document server on loopback, fetched through the real
 * guarded fetcher, with the dev-mode allowances (http, loopback) and without them (SSRF refusal).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { createCimdResolver } from '../../src/authserver/clients/cimd.ts';
import { InvalidClient } from '../../src/http/errors.ts';
import { createGuardedFetch } from '../../src/net/guarded-fetch.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/port.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { pkcePair, startLoginServer, startRecordingServer, type LoginServer, type RecordingServer } from './login-server.ts';

/** Documents by path: a body (object → JSON) and optional headers. */
const documents = new Map<string, { body: unknown; headers?: Record<string, string>; status?: number }>();
let host: RecordingServer;
const devFetch = createGuardedFetch({ allowHttp: true, allowPrivate: true });
const strictFetch = createGuardedFetch();
let clock = 0;

before(async () => {
  host = await startRecordingServer((_req, res, url) => {
    const doc = documents.get(url.pathname);
    if (!doc) {
      res.writeHead(404).end();
      return;
    }
    const body = typeof doc.body === 'string' ? doc.body : JSON.stringify(doc.body);
    res.writeHead(doc.status ?? 200, { 'content-type': 'application/json', ...doc.headers });
    res.end(body);
  });
});
after(async () => {
  await host?.close();
  await devFetch.close();
  await strictFetch.close();
});

/** Publishes a document at `path` whose client_id is its own URL (unless overridden). */
function publish(path: string, extra: Record<string, unknown> = {}, headers?: Record<string, string>): string {
  const url = `${host.url}${path}`;
  documents.set(path, { body: { client_id: url, client_name: 'Doc Agent', redirect_uris: ['http://127.0.0.1/callback'], ...extra }, headers });
  return url;
}

function hits(path: string): number {
  return host.requests.filter((u) => u.pathname === path).length;
}

const sealer = createSealer({ keys: [{ id: 'k1', key: randomBytes(32) }] });
/** A resolver over its own store (a fresh gateway), or over a given one (another replica of the same gateway). */
const dev = (store: Store = createMemoryStore({ now: () => clock })) => createCimdResolver({ fetch: devFetch, store, sealer, allowHttp: true, now: () => clock });

async function refusal(promise: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof InvalidClient, String(error));
    assert.equal(error.code, 'invalid_client');
    assert.match(error.message, message);
    return true;
  });
}

describe('with dev-mode allowances', () => {
  test('a valid document becomes a public client with its redirect URIs', async () => {
    const url = publish('/agent.json');
    const client = await dev().resolve(url);
    assert.equal(client.clientId, url);
    assert.equal(client.kind, 'cimd');
    assert.equal(client.tokenEndpointAuthMethod, 'none');
    assert.deepEqual(client.redirectUris, ['http://127.0.0.1/callback']);
    assert.equal(client.clientName, 'Doc Agent');
  });

  test('is cached per Cache-Control within bounds, and fetched once for concurrent requests', async () => {
    const resolver = dev();
    const url = publish('/cached.json', {}, { 'cache-control': 'public, max-age=600' });
    await Promise.all(Array.from({ length: 5 }, () => resolver.resolve(url)));
    assert.equal(hits('/cached.json'), 1, 'concurrent resolutions share one fetch');
    clock += 599_000;
    await resolver.resolve(url);
    assert.equal(hits('/cached.json'), 1);
    clock += 2000;
    await resolver.resolve(url);
    assert.equal(hits('/cached.json'), 2, 'refetched after max-age');
  });

  test('no-store is still cached for the minimum (no fetch amplification), max-age is capped at a day', async () => {
    const resolver = dev();
    const noStore = publish('/no-store.json', {}, { 'cache-control': 'no-store' });
    await resolver.resolve(noStore);
    clock += 59_000;
    await resolver.resolve(noStore);
    assert.equal(hits('/no-store.json'), 1);
    clock += 2000;
    await resolver.resolve(noStore);
    assert.equal(hits('/no-store.json'), 2);

    const forever = publish('/forever.json', {}, { 'cache-control': 'max-age=31536000' });
    await resolver.resolve(forever);
    clock += 86_400_000 + 1000;
    await resolver.resolve(forever);
    assert.equal(hits('/forever.json'), 2);
  });

  test('a document naming another client_id is refused', async () => {
    const url = `${host.url}/mismatch.json`;
    documents.set('/mismatch.json', { body: { client_id: 'https://other.example/agent.json', redirect_uris: ['http://127.0.0.1/cb'] } });
    await refusal(dev().resolve(url), /must name its own URL as client_id/);
  });

  test('a document over 5 KiB is refused', async () => {
    const url = publish('/big.json', { padding: 'x'.repeat(5 * 1024) });
    await refusal(dev().resolve(url), /too_large/);
  });

  test('a document asking for a secret-based auth method is refused (a published document holds no secret)', async () => {
    const url = publish('/secret.json', { token_endpoint_auth_method: 'client_secret_basic' });
    await refusal(dev().resolve(url), /must be "none"/);
  });

  test('a document with a bad redirect URI is refused', async () => {
    const url = publish('/bad-redirect.json', { redirect_uris: ['http://evil.example/cb'] });
    await refusal(dev().resolve(url), /redirect_uris\[0\]/);
  });

  test('a missing document, and one that is not JSON, are refused', async () => {
    await refusal(dev().resolve(`${host.url}/missing.json`), /HTTP 404/);
    documents.set('/html.json', { body: '<html>' });
    await refusal(dev().resolve(`${host.url}/html.json`), /not JSON/);
  });

  test('client_id URLs that are malformed are refused before any fetch', async () => {
    const resolver = dev();
    const before = host.requests.length;
    await refusal(resolver.resolve(`${host.url}/`), /must contain a path/);
    await refusal(resolver.resolve(`${host.url}/a.json#x`), /fragment/);
    await refusal(resolver.resolve(`http://user:pw@127.0.0.1:${host.port}/a.json`), /credentials/);
    await refusal(resolver.resolve(`${host.url}/a/../agent.json`), /"\." or "\.\."/);
    await refusal(resolver.resolve(`${host.url}/a/%2e%2e/agent.json`), /"\." or "\.\."/);
    assert.equal(host.requests.length, before);
  });
});

describe('fetched only by authorize, kept in the store (issue 10, item 4)', () => {
  test('known() never fetches: a URL no authorization request fetched is unknown', async () => {
    const resolver = dev();
    const url = publish('/never-authorized.json');
    for (let i = 0; i < 5; i++) assert.equal(await resolver.known(url), undefined);
    assert.equal(hits('/never-authorized.json'), 0);
    await resolver.resolve(url);
    assert.equal((await resolver.known(url))?.clientId, url);
    assert.equal(hits('/never-authorized.json'), 1);
  });

  test('another replica (same store, its own resolver) finds what the first one fetched, without a fetch', async () => {
    const store = createMemoryStore({ now: () => clock });
    const url = publish('/shared.json', {}, { 'cache-control': 'max-age=600' });
    await dev(store).resolve(url);
    const replica = dev(store);
    assert.equal((await replica.known(url))?.clientId, url);
    assert.equal((await replica.resolve(url)).clientId, url);
    assert.equal(hits('/shared.json'), 1);
  });

  test('a refused document is remembered for a minute: one fetch per minute however many requests', async () => {
    const resolver = dev();
    const url = `${host.url}/failing.json`;
    for (let i = 0; i < 10; i++) await refusal(resolver.resolve(url), /HTTP 404/);
    assert.equal(hits('/failing.json'), 1);
    clock += 59_000;
    await refusal(resolver.resolve(url), /HTTP 404/);
    assert.equal(hits('/failing.json'), 1, 'still within the minute');
    clock += 2000;
    await refusal(resolver.resolve(url), /HTTP 404/);
    assert.equal(hits('/failing.json'), 2, 'refetched once the failure has expired');
  });

  test('a document stays known 15 minutes after its fetch, and as long as tokens are issued to its client', async () => {
    const resolver = dev();
    const url = publish('/retained.json', {}, { 'cache-control': 'no-store' });
    const client = await resolver.resolve(url);
    clock += 14 * 60_000;
    assert.ok(await resolver.known(url), 'still known while the sign-in and the code can last');
    await resolver.retain(client);
    clock += 20 * 86_400_000;
    assert.ok(await resolver.known(url), 'retained for the session lifetime');
    await resolver.retain(client);
    clock += 20 * 86_400_000;
    assert.ok(await resolver.known(url), 'a later token slid it again');
    clock += 11 * 86_400_000;
    assert.equal(await resolver.known(url), undefined, 'forgotten once no token was issued for 30 days');
    const unused = publish('/unused.json');
    await resolver.resolve(unused);
    clock += 16 * 60_000;
    assert.equal(await resolver.known(unused), undefined, 'a document no token was issued for is forgotten after 15 minutes');
  });
});

describe('without dev-mode allowances (production)', () => {
  const strict = () => createCimdResolver({ fetch: strictFetch, store: createMemoryStore(), sealer });

  test('http client ids are refused', async () => {
    await refusal(strict().resolve(publish('/agent.json')), /must use https/);
  });

  test('a loopback address is refused by the SSRF guard, without a connection', async () => {
    const before = host.requests.length;
    await refusal(strict().resolve(`https://127.0.0.1:${host.port}/agent.json`), /ssrf_blocked/);
    await refusal(strict().resolve(`https://localhost:${host.port}/agent.json`), /ssrf_blocked/);
    await refusal(strict().resolve('https://169.254.169.254/latest/meta-data.json'), /ssrf_blocked/);
    await refusal(strict().resolve('https://[::1]/agent.json'), /ssrf_blocked/);
    assert.equal(host.requests.length, before);
  });
});

describe('through the authorization endpoint', () => {
  let idp: DevIdp;
  let server: LoginServer;
  let strictServer: LoginServer;
  before(async () => {
    idp = await startDevIdp();
    server = await startLoginServer({ idp });
    strictServer = await startLoginServer({ idp, cimd: 'strict' });
  });
  after(async () => {
    await server?.close();
    await strictServer?.close();
    await idp?.close();
  });

  function authorizeUrl(issuer: string, clientId: string, redirectUri: string): string {
    const params = new URLSearchParams({
      client_id: clientId,
      redirect_uri: redirectUri,
      response_type: 'code',
      code_challenge: pkcePair().challenge,
      code_challenge_method: 'S256',
      state: 's',
    });
    return `${issuer}/oauth/authorize?${params}`;
  }

  test("a document's redirect URI is accepted (any loopback port) and the browser goes on to the IdP", async () => {
    const url = publish('/authorize.json');
    const res = await fetch(authorizeUrl(server.issuer, url, 'http://127.0.0.1:41234/callback'), { redirect: 'manual' });
    assert.equal(res.status, 302);
    assert.ok(res.headers.get('location')!.startsWith(`${idp.issuer}/auth?`));
  });

  test('a redirect URI the document does not list gets an HTML page', async () => {
    const url = publish('/authorize2.json');
    const res = await fetch(authorizeUrl(server.issuer, url, 'https://evil.example/callback'), { redirect: 'manual' });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('location'), null);
  });

  test('in production a loopback document is refused with an HTML page', async () => {
    const res = await fetch(authorizeUrl(strictServer.issuer, `https://127.0.0.1:${host.port}/agent.json`, 'http://127.0.0.1/callback'), { redirect: 'manual' });
    assert.equal(res.status, 400);
    assert.match(await res.text(), /ssrf_blocked/);
  });
});
