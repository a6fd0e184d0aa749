/**
 * Our client at an upstream's authorization server, in the spec's order: a preconfigured client,
 * our Client ID Metadata Document, dynamic registration (cached, renewed before the secret
 * expires). The first two run the whole flow against real oidc-provider instances; the DCR cache
 * rules run against a small registration endpoint that answers what each case needs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGuardedFetch, type GuardedFetch } from '../../src/net/guarded-fetch.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { ClientRegistrationError, createClientRegistration } from '../../src/upstream-oauth/client-registration.ts';
import type { AuthorizationServerMetadata } from '../../src/upstream-oauth/discovery.ts';
import { createUpstreamStores } from '../../src/upstream-oauth/stores.ts';
import { authRequiredOf, sessionOf, startHarness, toolText, type Harness } from './harness.ts';

async function connectAndCall(h: Harness): Promise<URL> {
  const user = sessionOf('alice');
  const whoami = () => h.rpc(user, 'tools/call', { name: 'whoami', arguments: {} });
  const required = authRequiredOf(await whoami());
  assert.ok(required.auth_url.startsWith(`${h.publicUrl}/oauth/upstream/start?`));
  const browser = h.browser(user);
  const page = await h.connect(browser, required.auth_url);
  assert.equal(page.status, 200, page.body);
  assert.equal(toolText(await whoami()), 'upstream user alice-up');
  return new URL(browser.visited.find((u) => u.startsWith(`${h.upstream.issuer}/auth?`))!);
}

describe('the client at the upstream authorization server', () => {
  test('CIMD: where the server supports it, our metadata document URL is the client_id', async () => {
    const h = await startHarness({ registration: 'cimd', publicUrl: 'https' });
    try {
      const meta = await (await fetch(`${h.upstream.issuer}/.well-known/openid-configuration`)).json() as Record<string, unknown>;
      assert.equal(meta['client_id_metadata_document_supported'], true);
      const authorize = await connectAndCall(h);
      assert.equal(authorize.searchParams.get('client_id'), 'https://gw.test/oauth/client-metadata.json');
      assert.equal(authorize.searchParams.get('redirect_uri'), 'https://gw.test/oauth/upstream/callback');
      assert.ok(h.upstream.metadataFetches() >= 1, 'the server fetched our document');
      assert.equal(h.upstream.registrations(), 0);
    } finally {
      await h.close();
    }
  });

  test('preconfigured: the configured client id and secret are used, nothing is registered', async () => {
    const h = await startHarness({ registration: 'preconfigured' });
    try {
      const authorize = await connectAndCall(h);
      assert.equal(authorize.searchParams.get('client_id'), h.upstream.client!.clientId);
      assert.equal(h.upstream.registrations(), 0);
      assert.equal(h.upstream.metadataFetches(), 0);
    } finally {
      await h.close();
    }
  });
});

describe('dynamic registration (RFC 7591)', () => {
  let server: Server;
  let base: string;
  let fetch: GuardedFetch;
  let requests: Array<Record<string, unknown>>;
  let answer: (body: Record<string, unknown>) => { status: number; body: unknown };
  let skew = 0;
  const now = () => Date.now() + skew;

  before(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
        requests.push(body);
        const out = answer(body);
        res.writeHead(out.status, { 'content-type': 'application/json' }).end(typeof out.body === 'string' ? out.body : JSON.stringify(out.body));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    fetch = createGuardedFetch({ allowHttp: true, allowHosts: ['127.0.0.1'] });
  });
  after(async () => {
    await fetch.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  function setup(publicUrl = 'http://gw.local') {
    requests = [];
    skew = 0;
    const stores = createUpstreamStores({
      store: createMemoryStore({ now }),
      sealer: createSealer({ keys: [{ id: 'k', key: new Uint8Array(32).fill(1) }] }),
      now,
    });
    return createClientRegistration({ fetch, stores, publicUrl, now });
  }

  const server_ = (extra: Partial<AuthorizationServerMetadata> = {}): AuthorizationServerMetadata => ({
    issuer: base,
    authorization_endpoint: `${base}/authorize`,
    token_endpoint: `${base}/token`,
    registration_endpoint: `${base}/register`,
    code_challenge_methods_supported: ['S256'],
    ...extra,
  });
  const upstream = { name: 'notes' };

  test('registers a confidential client, caches it per scopes, and registers again before the secret expires', async () => {
    const registration = setup();
    let n = 0;
    answer = (body) => ({
      status: 201,
      body: { ...body, client_id: `client-${++n}`, client_secret: `secret-${n}`, client_secret_expires_at: Math.floor(now() / 1000) + 120 },
    });
    const first = await registration.clientFor({ upstream, server: server_(), scopes: ['a'] });
    assert.deepEqual(first, { clientId: 'client-1', clientSecret: 'secret-1', authMethod: 'client_secret_basic', source: 'dcr' });
    assert.deepEqual(requests[0]!.redirect_uris, ['http://gw.local/oauth/upstream/callback']);
    assert.equal(requests[0]!.scope, 'a');
    assert.deepEqual(requests[0]!.grant_types, ['authorization_code', 'refresh_token']);

    assert.equal((await registration.clientFor({ upstream, server: server_(), scopes: ['a'] })).clientId, 'client-1');
    assert.equal((await registration.clientFor({ upstream, server: server_(), scopes: ['a', 'b'] })).clientId, 'client-2');
    assert.equal(requests.length, 2);

    skew = 61_000; // within a minute of client_secret_expires_at: not reused
    assert.equal((await registration.clientFor({ upstream, server: server_(), scopes: ['a'] })).clientId, 'client-3');
  });

  test('a server that only allows public clients gets one', async () => {
    const registration = setup();
    answer = (body) => ({ status: 201, body: { ...body, client_id: 'public-1' } });
    const client = await registration.clientFor({ upstream, server: server_({ token_endpoint_auth_methods_supported: ['none'] }), scopes: [] });
    assert.deepEqual(client, { clientId: 'public-1', clientSecret: undefined, authMethod: 'none', source: 'dcr' });
    assert.equal(requests[0]!.token_endpoint_auth_method, 'none');
    assert.equal('scope' in requests[0]!, false);
  });

  test('an http gateway cannot use CIMD (client ids must be https) and registers instead', async () => {
    const registration = setup('http://gw.local');
    answer = (body) => ({ status: 201, body: { ...body, client_id: 'dcr-1', client_secret: 's' } });
    const client = await registration.clientFor({ upstream, server: server_({ client_id_metadata_document_supported: true }), scopes: [] });
    assert.equal(client.source, 'dcr');
    const https = setup('https://gw.example');
    assert.deepEqual(await https.clientFor({ upstream, server: server_({ client_id_metadata_document_supported: true }), scopes: [] }), {
      clientId: 'https://gw.example/oauth/client-metadata.json',
      authMethod: 'none',
      source: 'cimd',
    });
  });

  test('refusals and malformed answers are clear errors', async () => {
    const registration = setup();
    const cases: Array<[() => { status: number; body: unknown }, RegExp]> = [
      [() => ({ status: 400, body: { error: 'invalid_redirect_uri', error_description: '<script>' } }), /was refused: 400 invalid_redirect_uri$/],
      [() => ({ status: 201, body: 'not json' }), /not a JSON object/],
      [() => ({ status: 201, body: { client_secret: 'x' } }), /client_id missing/],
      [() => ({ status: 201, body: { client_id: 'c', token_endpoint_auth_method: 'private_key_jwt' } }), /private_key_jwt" is not supported/],
      [() => ({ status: 201, body: { client_id: 'c', token_endpoint_auth_method: 'client_secret_basic' } }), /without a client_secret/],
    ];
    for (const [reply, message] of cases) {
      answer = reply;
      await assert.rejects(registration.clientFor({ upstream, server: server_(), scopes: ['x'] }), (err: unknown) => {
        assert.ok(err instanceof ClientRegistrationError);
        assert.match(err.message, message);
        assert.ok(!err.message.includes('<script>'));
        return true;
      });
    }
    await assert.rejects(
      registration.clientFor({ upstream, server: server_({ registration_endpoint: undefined }), scopes: [] }),
      /offers neither client ID metadata documents nor dynamic registration; configure clientId/,
    );
  });

  test('a preconfigured client wins, with the auth method the server supports', async () => {
    const registration = setup();
    assert.deepEqual(await registration.clientFor({ upstream: { name: 'x', clientId: 'id', clientSecret: 's', issuer: base }, server: server_({ token_endpoint_auth_methods_supported: ['client_secret_post'] }), scopes: [] }), {
      clientId: 'id',
      clientSecret: 's',
      authMethod: 'client_secret_post',
      source: 'preconfigured',
    });
    assert.equal((await registration.clientFor({ upstream: { name: 'x', clientId: 'id', issuer: base }, server: server_(), scopes: [] })).authMethod, 'none');
    assert.equal(requests.length, 0);
  });

  test('a preconfigured client is handed out only for the server it was configured for', async () => {
    const registration = setup();
    await assert.rejects(
      registration.clientFor({ upstream: { name: 'x', clientId: 'id', clientSecret: 's', issuer: 'https://as.example' }, server: server_(), scopes: [] }),
      /preconfigured client of upstream "x" belongs to another authorization server/,
    );
    await assert.rejects(registration.clientFor({ upstream: { name: 'x', clientId: 'id', clientSecret: 's' }, server: server_(), scopes: [] }), /belongs to another/);
    assert.equal(requests.length, 0);
  });
});
