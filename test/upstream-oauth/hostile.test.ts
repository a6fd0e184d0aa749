/**
 * Bad input from upstreams and their authorization servers: hostile `WWW-Authenticate` headers,
 * SSRF targets in `resource_metadata` and `authorization_servers`, metadata naming another issuer
 * or resource, an authorization server without PKCE S256, oversized metadata, a hostile error in
 * the callback. Each must reach the agent as a clear error, and the gateway must keep serving.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { authRequiredOf, sessionOf, startHarness, type Harness } from './harness.ts';

/** What the hostile upstream answers: its 401 challenge, and documents by path (404 otherwise). */
let challenge: string;
let docs: Record<string, unknown> = {};
let hostile: Server;
let base: string;
let h: Harness;

before(async () => {
  hostile = createServer((req, res) => {
    const path = req.url ?? '/';
    if (path === '/mcp') {
      res.writeHead(401, { 'www-authenticate': challenge, 'content-type': 'application/json' }).end('{"error":"invalid_token"}');
      return;
    }
    const doc = docs[path];
    if (doc === undefined) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/json' }).end(typeof doc === 'string' ? doc : JSON.stringify(doc));
  });
  await new Promise<void>((resolve) => hostile.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(hostile.address() as AddressInfo).port}`;
  h = await startHarness({ registration: 'dcr', extraUpstreams: [{ name: 'hostile', url: `${base}/mcp` }] });
});
after(async () => {
  await h?.close();
  hostile.closeAllConnections();
  await new Promise((resolve) => hostile.close(resolve));
});

let n = 0;
/** A fresh `resource_metadata` URL per case, so no discovery result is shared between cases. */
function prmPath(): string {
  return `/prm-${++n}`;
}

async function refusedWith(pattern: RegExp): Promise<void> {
  const res = await h.rpc(sessionOf('alice'), 'tools/call', { name: 'x', arguments: {} }, 'hostile');
  assert.equal(res.status, 502, res.body);
  const body = JSON.parse(res.body) as { id: number; error: { message: string; data: { error: string } } };
  assert.equal(body.id, 1);
  assert.equal(body.error.data.error, 'bad_gateway');
  assert.match(body.error.message, /^upstream "hostile" needs authorization at its own server, but /);
  assert.match(body.error.message, pattern);
}

function asMetadata(issuer: string, extra: Record<string, unknown> = {}) {
  return {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    registration_endpoint: `${issuer}/register`,
    code_challenge_methods_supported: ['S256'],
    ...extra,
  };
}

describe('hostile upstreams', () => {
  test('SSRF targets in resource_metadata are refused before any connection is made', async () => {
    for (const target of ['http://169.254.169.254/latest/meta-data/', 'http://10.0.0.7/prm', 'http://localhost:1/prm', 'http://[::1]:1/prm', 'http://0.0.0.0/prm']) {
      challenge = `Bearer resource_metadata="${target}", scope="x"`;
      await refusedWith(/(ssrf_blocked|not allowed)/);
    }
    challenge = 'Bearer resource_metadata="file:///etc/passwd"';
    await refusedWith(/not an absolute http\(s\) URL/);
  });

  test('malformed and oversized WWW-Authenticate headers: parsed safely, discovery falls back, a clear error', async () => {
    for (const header of [
      'Bearer realm="unterminated',
      ',,, =, "",,,Bearer ,, resource_metadata',
      `Bearer ${'a=b, '.repeat(2000)}resource_metadata="${base}/nope"`,
      `Basic realm="x", Negotiate abc==, Bearer scope="\\"q\\"\t{}[] ${'s '.repeat(500)}"`,
      'Bearer resource_metadata=',
    ]) {
      challenge = header;
      await refusedWith(/no protected resource metadata/);
    }
  });

  test('metadata naming another resource, an SSRF authorization server, another issuer, no S256, or too large', async () => {
    const cases: Array<[Record<string, unknown> | string, RegExp, Record<string, unknown>?]> = [
      [{ resource: 'https://elsewhere.example/mcp', authorization_servers: [`${base}/as`] }, /does not match/],
      [{ resource: `${base}/mcp`, authorization_servers: ['http://169.254.169.254/as'] }, /(ssrf_blocked|not allowed)/],
      [{ resource: `${base}/mcp`, authorization_servers: [`${base}/as-a`] }, /issuer does not equal/, { '/.well-known/oauth-authorization-server/as-a': asMetadata(`${base}/as-other`) }],
      [{ resource: `${base}/mcp`, authorization_servers: [`${base}/as-b`] }, /PKCE S256/, { '/.well-known/oauth-authorization-server/as-b': asMetadata(`${base}/as-b`, { code_challenge_methods_supported: ['plain'] }) }],
      [JSON.stringify({ resource: `${base}/mcp`, authorization_servers: [`${base}/as`], padding: 'x'.repeat(100 * 1024) }), /too_large/],
    ];
    for (const [prm, pattern, extra] of cases) {
      const path = prmPath();
      docs = { [path]: prm, ...extra };
      challenge = `Bearer resource_metadata="${base}${path}"`;
      await refusedWith(pattern);
    }
  });

  test('an authorization error in the callback is shown escaped, never echoed', async () => {
    const user = sessionOf('alice');
    const browser = h.browser(user);
    const authUrl = authRequiredOf(await h.rpc(user, 'tools/call', { name: 'whoami', arguments: {} })).auth_url;
    const stopped = await h.connect(browser, authUrl, { stopAtCallback: true });
    const callback = new URL(String(stopped.headers.location), stopped.url);
    callback.searchParams.delete('code');
    callback.searchParams.set('error', '<script>alert(1)</script>');
    callback.searchParams.set('error_description', '<img src=x onerror=alert(1)>');
    const page = await browser.open(callback.href);
    assert.equal(page.status, 502);
    assert.match(page.body, /answered with the error &quot;scriptalert1script&quot;/);
    assert.ok(!page.body.includes('<script>') && !page.body.includes('<img'));
  });

  test('the gateway kept serving throughout', async () => {
    const res = await h.rpc(sessionOf('alice'), 'tools/call', { name: 'whoami', arguments: {} });
    assert.equal(authRequiredOf(res).server_name, 'notes');
  });
});
