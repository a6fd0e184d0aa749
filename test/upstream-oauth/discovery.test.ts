import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGuardedFetch, FetchRefusedError, type GuardedFetch, type GuardedResponse } from '../../src/net/guarded-fetch.ts';
import { createDiscovery, DiscoveryError, type DiscoveryErrorCode, type DiscoveryOptions } from '../../src/upstream-oauth/discovery.ts';

/** Documents served by path; anything else is a 404. `seen` lists every path requested, in order. */
let docs: Record<string, unknown>;
let seen: string[];
let server: Server;
let base: string;
let guardedFetch: GuardedFetch;

before(async () => {
  server = createServer((req, res) => {
    const path = req.url ?? '/';
    seen.push(path);
    const doc = docs[path];
    if (doc === undefined) res.writeHead(404).end();
    else if (typeof doc === 'string') res.writeHead(200, { 'content-type': 'text/html' }).end(doc);
    else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // The real guarded fetcher, opened for this loopback server only (dev mode: http allowed).
  guardedFetch = createGuardedFetch({ allowHttp: true, allowHosts: ['127.0.0.1'], maxBytes: 64 * 1024 });
});

after(async () => {
  await guardedFetch.close();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  docs = {};
  seen = [];
});

function discovery(extra: Partial<DiscoveryOptions> = {}) {
  return createDiscovery({ fetch: guardedFetch, allowHttp: true, ...extra });
}

function asMetadata(issuer: string, extra: Record<string, unknown> = {}) {
  return {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    registration_endpoint: `${issuer}/register`,
    response_types_supported: ['code'],
    code_challenge_methods_supported: ['S256'],
    ...extra,
  };
}

async function refused(promise: Promise<unknown>, code: DiscoveryErrorCode): Promise<DiscoveryError> {
  const err = await promise.then(
    () => assert.fail(`expected DiscoveryError(${code})`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof DiscoveryError, `expected DiscoveryError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  return err;
}

describe('discoverResource (RFC 9728)', () => {
  test('path-inserted URL first, then the root', async () => {
    docs['/.well-known/oauth-protected-resource'] = { resource: base, authorization_servers: [`${base}/as`] };
    const prm = await discovery().discoverResource(`${base}/tenant/mcp/`);
    assert.deepEqual(seen, ['/.well-known/oauth-protected-resource/tenant/mcp', '/.well-known/oauth-protected-resource']);
    assert.equal(prm.resource, base);
    assert.deepEqual(prm.authorization_servers, [`${base}/as`]);
  });

  test("the challenge's resource_metadata URL comes first", async () => {
    docs['/meta/prm'] = { resource: `${base}/mcp`, authorization_servers: [`${base}/as`], scopes_supported: ['read'], resource_name: 'X' };
    const prm = await discovery().discoverResource(`${base}/mcp`, { resourceMetadata: `${base}/meta/prm` });
    assert.deepEqual(seen, ['/meta/prm']);
    assert.deepEqual(prm.scopes_supported, ['read']);
    assert.equal(prm.resource_name, 'X'); // other members pass through
  });

  test('a missing resource_metadata document falls back to the well-known URLs', async () => {
    docs['/.well-known/oauth-protected-resource/mcp'] = { resource: `${base}/mcp`, authorization_servers: [`${base}/as`] };
    await discovery().discoverResource(`${base}/mcp`, { resourceMetadata: `${base}/gone` });
    assert.deepEqual(seen, ['/gone', '/.well-known/oauth-protected-resource/mcp']);
  });

  test('an HTML answer is not metadata: the next candidate is tried', async () => {
    docs['/.well-known/oauth-protected-resource/mcp'] = '<!doctype html><title>SPA</title>';
    docs['/.well-known/oauth-protected-resource'] = { resource: `${base}/mcp`, authorization_servers: [`${base}/as`] };
    await discovery().discoverResource(`${base}/mcp`);
    assert.equal(seen.length, 2);
  });

  test('a resource that is not the MCP server is refused (§3.3)', async () => {
    const d = discovery();
    docs['/.well-known/oauth-protected-resource/mcp'] = { resource: 'https://evil.example/mcp', authorization_servers: [`${base}/as`] };
    await refused(d.discoverResource(`${base}/mcp`), 'resource_mismatch');
    docs['/.well-known/oauth-protected-resource/a/mcp'] = { resource: `${base}/b`, authorization_servers: [`${base}/as`] };
    await refused(d.discoverResource(`${base}/a/mcp`), 'resource_mismatch');
    docs['/.well-known/oauth-protected-resource/mcpx'] = { resource: `${base}/mcp`, authorization_servers: [`${base}/as`] };
    await refused(d.discoverResource(`${base}/mcpx`), 'resource_mismatch'); // prefix only on whole segments
    docs['/.well-known/oauth-protected-resource/frag'] = { resource: `${base}/frag#x`, authorization_servers: [`${base}/as`] };
    await refused(d.discoverResource(`${base}/frag`), 'resource_mismatch');
  });

  test('authorization_servers must be present and be issuer URLs', async () => {
    const d = discovery();
    docs['/.well-known/oauth-protected-resource/a'] = { resource: `${base}/a` };
    await refused(d.discoverResource(`${base}/a`), 'invalid_metadata');
    docs['/.well-known/oauth-protected-resource/b'] = { resource: `${base}/b`, authorization_servers: [] };
    await refused(d.discoverResource(`${base}/b`), 'invalid_metadata');
    docs['/.well-known/oauth-protected-resource/c'] = { resource: `${base}/c`, authorization_servers: ['not a url'] };
    await refused(d.discoverResource(`${base}/c`), 'invalid_metadata');
  });

  test('nothing anywhere → not_found, with no query string in the message', async () => {
    const err = await refused(discovery().discoverResource(`${base}/mcp?api_key=secret`), 'not_found');
    assert.doesNotMatch(err.message, /secret/);
  });

  test('http refused outside dev mode', async () => {
    await refused(discovery({ allowHttp: false }).discoverResource(`${base}/mcp`), 'insecure_url');
    await refused(discovery({ allowHttp: false }).discoverResource('https://mcp.example/mcp', { resourceMetadata: 'http://mcp.example/prm' }), 'insecure_url');
    assert.deepEqual(seen, []);
  });
});

describe('discoverAuthorizationServer (RFC 8414, OIDC Discovery, MCP order)', () => {
  test('issuer with a path: the three URLs in the MCP spec order', async () => {
    const issuer = `${base}/realms/acme`;
    docs['/realms/acme/.well-known/openid-configuration'] = asMetadata(issuer);
    const meta = await discovery().discoverAuthorizationServer(issuer);
    assert.deepEqual(seen, [
      '/.well-known/oauth-authorization-server/realms/acme',
      '/.well-known/openid-configuration/realms/acme',
      '/realms/acme/.well-known/openid-configuration',
    ]);
    assert.equal(meta.token_endpoint, `${issuer}/token`);
  });

  test('issuer without a path: RFC 8414 first, then OIDC', async () => {
    docs['/.well-known/openid-configuration'] = asMetadata(base);
    await discovery().discoverAuthorizationServer(base);
    assert.deepEqual(seen, ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']);
  });

  test('stops at the first document found', async () => {
    docs['/.well-known/oauth-authorization-server'] = asMetadata(base, { client_id_metadata_document_supported: true });
    docs['/.well-known/openid-configuration'] = asMetadata(base);
    const meta = await discovery().discoverAuthorizationServer(base);
    assert.deepEqual(seen, ['/.well-known/oauth-authorization-server']);
    assert.equal(meta.client_id_metadata_document_supported, true);
  });

  test('issuer mismatch refused, even by a trailing slash', async () => {
    const d = discovery();
    docs['/.well-known/oauth-authorization-server/t1'] = asMetadata(`${base}/t2`);
    await refused(d.discoverAuthorizationServer(`${base}/t1`), 'issuer_mismatch');
    docs['/.well-known/oauth-authorization-server/t3'] = asMetadata(`${base}/t3/`);
    await refused(d.discoverAuthorizationServer(`${base}/t3`), 'issuer_mismatch');
  });

  test('no S256 refused, and absent code_challenge_methods_supported too (MCP 2025-11-25)', async () => {
    const d = discovery();
    docs['/.well-known/oauth-authorization-server/plain'] = asMetadata(`${base}/plain`, { code_challenge_methods_supported: ['plain'] });
    await refused(d.discoverAuthorizationServer(`${base}/plain`), 'pkce_unsupported');
    docs['/.well-known/oauth-authorization-server/none'] = asMetadata(`${base}/none`, { code_challenge_methods_supported: undefined });
    await refused(d.discoverAuthorizationServer(`${base}/none`), 'pkce_unsupported');
  });

  test('required endpoints must be present and be URLs', async () => {
    const d = discovery();
    docs['/.well-known/oauth-authorization-server/a'] = asMetadata(`${base}/a`, { token_endpoint: undefined });
    await refused(d.discoverAuthorizationServer(`${base}/a`), 'invalid_metadata');
    docs['/.well-known/oauth-authorization-server/b'] = asMetadata(`${base}/b`, { authorization_endpoint: 'javascript:alert(1)' });
    await refused(d.discoverAuthorizationServer(`${base}/b`), 'invalid_metadata');
    docs['/.well-known/oauth-authorization-server/c'] = asMetadata(`${base}/c`, { response_types_supported: ['token'] });
    await refused(d.discoverAuthorizationServer(`${base}/c`), 'invalid_metadata');
  });

  test('oversized metadata refused', async () => {
    docs['/.well-known/oauth-authorization-server'] = asMetadata(base, { padding: 'x'.repeat(100 * 1024) });
    const err = await refused(discovery().discoverAuthorizationServer(base), 'fetch_failed');
    assert.ok(err.cause instanceof FetchRefusedError && err.cause.reason === 'too_large');
    assert.equal(seen.length, 1); // a refusal is an answer: no further candidates
  });

  test('issuer identifiers with a query or fragment are refused before any request', async () => {
    await refused(discovery().discoverAuthorizationServer(`${base}/?tenant=x`), 'bad_url');
    await refused(discovery().discoverAuthorizationServer('not a url'), 'bad_url');
    assert.deepEqual(seen, []);
  });

  test('http endpoints refused outside dev mode', async () => {
    const issuer = 'https://as.example';
    const body = Buffer.from(JSON.stringify(asMetadata(issuer, { token_endpoint: 'http://as.example/token' })));
    // A stand-in fetcher: the guarded one would not reach an https host from this sandbox.
    const fetch = async (url: string): Promise<GuardedResponse> => ({
      status: 200,
      headers: new Headers(),
      url,
      body,
      text: () => body.toString(),
      json: <T>() => JSON.parse(body.toString()) as T,
    });
    const err = await refused(createDiscovery({ fetch }).discoverAuthorizationServer(issuer), 'insecure_url');
    assert.match(err.message, /token_endpoint/);
  });
});

describe('discovery cache', () => {
  test('a cache hit makes no second request; expiry does', async () => {
    let now = 1_000_000;
    const d = discovery({ cacheTtlMs: 60_000, now: () => now });
    docs['/.well-known/oauth-authorization-server'] = asMetadata(base);
    const first = await d.discoverAuthorizationServer(base);
    assert.equal(await d.discoverAuthorizationServer(base), first);
    assert.equal(seen.length, 1);
    now += 60_001;
    await d.discoverAuthorizationServer(base);
    assert.equal(seen.length, 2);
  });

  test('concurrent discoveries share one request', async () => {
    const d = discovery();
    docs['/.well-known/oauth-protected-resource/mcp'] = { resource: `${base}/mcp`, authorization_servers: [base] };
    await Promise.all([d.discoverResource(`${base}/mcp`), d.discoverResource(`${base}/mcp`), d.discoverResource(`${base}/mcp`)]);
    assert.equal(seen.length, 1);
  });

  test('failures are remembered only briefly', async () => {
    let now = 0;
    const d = discovery({ cacheTtlMs: 60_000, failureTtlMs: 1000, now: () => now });
    await refused(d.discoverAuthorizationServer(base), 'not_found');
    await refused(d.discoverAuthorizationServer(base), 'not_found');
    assert.equal(seen.length, 2); // both candidates, once
    docs['/.well-known/oauth-authorization-server'] = asMetadata(base);
    now += 1001;
    await d.discoverAuthorizationServer(base);
    assert.equal(seen.length, 3);
  });

  test('options are validated at construction', () => {
    assert.throws(() => createDiscovery({ fetch: undefined as never }), TypeError);
    assert.throws(() => discovery({ cacheTtlMs: -1 }), TypeError);
    assert.throws(() => discovery({ maxEntries: 0 }), TypeError);
  });
});
