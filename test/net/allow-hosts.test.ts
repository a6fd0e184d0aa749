/**
 * `server.allowHosts` reaches the gateway's own fetcher: a gateway outside devMode, whose client
 * metadata document is published on loopback over https (a private CA made by openssl here, trusted
 * by this process), refuses to fetch it while the host is not listed and fetches it once it is.
 * The authorization endpoint is the fetch anyone can trigger, so it stands for every server-side
 * fetch (token exchange, discovery, registration): they all go through the one fetcher.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { getCACertificates, setDefaultCACertificates } from 'node:tls';
import { generateSigningKeyPem } from '../../src/authserver/tokens/keys.ts';
import { pkcePair } from '../authserver/login-server.ts';
import { startGateway } from '../support/gateway.ts';

const IDP_AUTHORIZE = 'https://idp.example/login/oauth/authorize';
const REDIRECT_URI = 'http://127.0.0.1:41234/callback';

let dir: string;
let documents: Server;
let documentUrl: string;
const fetched: string[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mcpgate-allow-hosts-'));
  makeCertificates(dir);
  // The gateway's fetcher verifies certificates against the default CAs: ours is added to them.
  setDefaultCACertificates([...getCACertificates('default'), readFileSync(join(dir, 'ca.crt'), 'utf8')]);
  documents = createServer({ cert: readFileSync(join(dir, 'server.crt')), key: readFileSync(join(dir, 'server.key')) }, (req, res) => {
    fetched.push(req.url ?? '');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ client_id: documentUrl, client_name: 'Loopback Agent', redirect_uris: [REDIRECT_URI] }));
  });
  await new Promise<void>((resolve) => documents.listen(0, '127.0.0.1', resolve));
  documentUrl = `https://127.0.0.1:${(documents.address() as AddressInfo).port}/agent.json`;
});

after(async () => {
  documents?.closeAllConnections();
  await new Promise<void>((resolve) => (documents ? documents.close(() => resolve()) : resolve()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A production gateway (devMode off) with login, its fetcher allowed `allowHosts`; the authorization request it answers. */
async function authorizeThrough(allowHosts: string[]): Promise<Response> {
  const gateway = await startGateway({
    upstreams: [{ name: 'tools', url: 'https://tools.example/mcp', auth: { mode: 'idp' } }],
    server: { devMode: false, publicUrl: 'https://gw.example', allowHosts },
    // Plain OAuth 2.0: the browser is sent to the configured endpoint, with no discovery.
    idp: {
      clientId: 'mcpgate',
      clientSecret: 'idp-secret',
      extra: { kind: 'oauth2', authorizationEndpoint: IDP_AUTHORIZE, tokenEndpoint: 'https://idp.example/token', userinfoEndpoint: 'https://idp.example/user', userClaim: 'id' },
    },
    authServer: { signingKeys: ['file:/keys/signing.pem'] },
    files: { '/keys/signing.pem': generateSigningKeyPem() },
  });
  try {
    const params = new URLSearchParams({
      client_id: documentUrl,
      redirect_uri: REDIRECT_URI,
      response_type: 'code',
      code_challenge: pkcePair().challenge,
      code_challenge_method: 'S256',
      state: 's',
    });
    return await fetch(new URL(`/oauth/authorize?${params}`, gateway.url), { redirect: 'manual' });
  } finally {
    await gateway.close();
  }
}

describe('server.allowHosts and the gateway fetcher', () => {
  test('a loopback document is refused without a connection while its host is not listed', async () => {
    const before = fetched.length;
    const res = await authorizeThrough(['sts.internal']);
    assert.equal(res.status, 400);
    assert.match(await res.text(), /could not be fetched \(ssrf_blocked\)/);
    assert.equal(fetched.length, before, 'the document server saw no request');
  });

  test('listed (as the config would list it), the document is fetched and the browser goes on to the IdP', async () => {
    const before = fetched.length;
    const res = await authorizeThrough(['127.0.0.1']);
    assert.equal(res.status, 302, await res.text());
    assert.ok(res.headers.get('location')!.startsWith(`${IDP_AUTHORIZE}?`), res.headers.get('location')!);
    assert.deepEqual(fetched.slice(before), ['/agent.json']);
  });
});

/** A private CA and a server certificate for 127.0.0.1, both P-256. */
function makeCertificates(at: string): void {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: at, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=mcpgate test CA');
  writeFileSync(join(at, 'server.ext'), 'subjectAltName=IP:127.0.0.1\n');
  openssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '1', '-extfile', 'server.ext');
}
