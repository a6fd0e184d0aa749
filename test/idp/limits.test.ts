/**
 * Issue 10, item 9: the company IdP is exempt from the guarded fetcher's address policy (the
 * operator configures it, often on an internal address), not from its size and time limits.
 * A real HTTP server on loopback plays an IdP that misbehaves (compromised, misconfigured, or
 * impersonated on the path): a discovery document far too large, and one whose body never ends.
 * A well-behaved IdP (the development `oidc-provider`) still works through the same limits.
 */
import assert from 'node:assert/strict';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { Config } from '../../src/config/schema.ts';
import { createOidcIdpClient } from '../../src/idp/oidc.ts';
import { IdpError } from '../../src/idp/types.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';

let server: Server;
let base: string;
let idp: DevIdp;
const open: ServerResponse[] = [];

before(async () => {
  server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const issuer = `${base}${url.pathname.split('/.well-known')[0]}`;
    const metadata = { issuer, authorization_endpoint: `${issuer}/auth`, token_endpoint: `${issuer}/token`, jwks_uri: `${issuer}/jwks`, response_types_supported: ['code'] };
    if (url.pathname === '/huge/.well-known/openid-configuration') {
      // Valid metadata, padded to 8 MiB, without a Content-Length (chunked): only counting the bytes read stops it.
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(JSON.stringify(metadata).slice(0, -1) + ',"padding":"');
      const chunk = 'x'.repeat(64 * 1024);
      for (let i = 0; i < 128; i++) res.write(chunk);
      res.end('"}');
      return;
    }
    if (url.pathname === '/stalls/.well-known/openid-configuration') {
      // Headers and the start of a body, then nothing: a slow-loris IdP.
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"issuer":');
      open.push(res);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  idp = await startDevIdp();
});
after(async () => {
  for (const res of open) res.destroy();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await idp?.close();
});

function client(issuer: string) {
  const config: NonNullable<Config['idp']> = { issuer, clientId: 'gw', scopes: ['openid'], userClaim: 'sub', authParams: {} };
  return createOidcIdpClient({ config, redirectUri: 'http://127.0.0.1:9/oauth/callback', devMode: true, timeoutSeconds: 1 });
}

describe('limits on the company IdP calls', () => {
  test('a response larger than the limit (1 MiB) is refused as the IdP being unavailable', async () => {
    const rssBefore = process.memoryUsage().rss;
    await assert.rejects(client(`${base}/huge`).startLogin('state'), (error: unknown) => {
      assert.ok(error instanceof IdpError, String(error));
      assert.equal(error.kind, 'unavailable');
      assert.match(error.message, /too large/);
      return true;
    });
    assert.ok(process.memoryUsage().rss - rssBefore < 64 * 1024 * 1024, 'the body was not buffered whole');
  });

  test('a body that never ends is cut at the time limit', async () => {
    const started = Date.now();
    await assert.rejects(client(`${base}/stalls`).startLogin('state'), (error: unknown) => error instanceof IdpError && error.kind === 'unavailable');
    const took = Date.now() - started;
    assert.ok(took < 5000, `gave up after ${took} ms`);
  });

  test('a real IdP works through the limits', async () => {
    const login = await client(idp.issuer).startLogin('state');
    assert.ok(login.url.startsWith(`${idp.issuer}/auth?`));
  });
});
