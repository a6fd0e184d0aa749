/**
 * Discovery on a real gateway: RFC 8414 / OIDC metadata, the JWKS, RFC 9728 resource metadata,
 * the path-inserted variants under a public URL with a path, and the signing keys behind them.
 */
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { generateSigningKeyPem, loadSigningKeys } from '../../src/authserver/tokens/keys.ts';
import { createTokenIssuer, verifyAccessToken } from '../../src/authserver/tokens/mint.ts';
import { startAuthGateway, type AuthGateway } from './fixture.ts';

async function getJson(url: string): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const res = await fetch(url);
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

describe('discovery at the root', () => {
  let gw: AuthGateway;
  const rotatedIn = generateSigningKeyPem('RS256');
  before(async () => {
    const publicOnly = createPublicKey(rotatedIn).export({ type: 'spki', format: 'pem' }) as string;
    gw = await startAuthGateway({
      upstreams: [{ name: 'kube', url: 'http://127.0.0.1:9/mcp' }, { name: 'docs', url: 'http://127.0.0.1:9/mcp' }],
      signingKeys: [generateSigningKeyPem('ES256'), publicOnly],
    });
  });
  after(async () => {
    await gw.close();
  });

  test('RFC 8414 metadata names every endpoint and only what we support', async () => {
    const { status, headers, body } = await getJson(`${gw.url}.well-known/oauth-authorization-server`);
    assert.equal(status, 200);
    assert.equal(headers.get('access-control-allow-origin'), '*');
    assert.equal(body.issuer, gw.issuer);
    assert.equal(body.authorization_endpoint, `${gw.issuer}/oauth/authorize`);
    assert.equal(body.token_endpoint, `${gw.issuer}/oauth/token`);
    assert.equal(body.registration_endpoint, `${gw.issuer}/oauth/register`);
    assert.equal(body.revocation_endpoint, `${gw.issuer}/oauth/revoke`);
    assert.equal(body.jwks_uri, `${gw.issuer}/.well-known/jwks.json`);
    assert.deepEqual(body.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(body.response_types_supported, ['code']);
    assert.deepEqual(body.grant_types_supported, ['authorization_code', 'refresh_token']);
    assert.deepEqual(body.token_endpoint_auth_methods_supported, ['none', 'client_secret_basic', 'client_secret_post']);
    assert.equal(body.authorization_response_iss_parameter_supported, true);
    assert.equal(body.client_id_metadata_document_supported, true);
    assert.deepEqual(body.scopes_supported, ['mcp']);
    const oidc = await getJson(`${gw.url}.well-known/openid-configuration`);
    assert.equal(oidc.body.issuer, gw.issuer);
    assert.deepEqual(oidc.body.subject_types_supported, ['public']);
  });

  test('the JWKS publishes every public key (the rotated-in one too), kid = RFC 7638 thumbprint, nothing private', async () => {
    const { status, headers, body } = await getJson(`${gw.url}.well-known/jwks.json`);
    assert.equal(status, 200);
    assert.equal(headers.get('content-type'), 'application/jwk-set+json');
    const keys = body.keys as JWK[];
    assert.deepEqual(keys.map((k) => k.alg), ['ES256', 'RS256']);
    for (const key of keys) {
      assert.equal(key.kid, await calculateJwkThumbprint(key, 'sha256'));
      assert.equal(key.use, 'sig');
      for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.equal(key[member as keyof JWK], undefined);
    }
  });

  test('RFC 9728 metadata per upstream; an unknown upstream is 404', async () => {
    const { status, body } = await getJson(`${gw.url}.well-known/oauth-protected-resource/kube/mcp`);
    assert.equal(status, 200);
    assert.deepEqual(body, {
      resource: gw.resource('kube'),
      authorization_servers: [gw.issuer],
      scopes_supported: ['mcp'],
      bearer_methods_supported: ['header'],
      resource_name: 'kube',
    });
    assert.equal((await fetch(`${gw.url}.well-known/oauth-protected-resource/nope/mcp`)).status, 404);
  });

  test('a request without a token gets the challenge that leads to that metadata (discovery starts here)', async () => {
    const res = await fetch(`${gw.url}kube/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
    assert.equal(res.status, 401);
    const challenge = res.headers.get('www-authenticate') ?? '';
    assert.equal(challenge, `Bearer resource_metadata="${gw.url}.well-known/oauth-protected-resource/kube/mcp", scope="mcp"`);
    const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge)![1]!;
    assert.equal((await getJson(metadataUrl)).body.resource, gw.resource('kube'));
  });
});

describe('discovery under a public URL with a path', () => {
  let gw: AuthGateway;
  before(async () => {
    gw = await startAuthGateway({
      upstreams: [{ name: 'kube', url: 'http://127.0.0.1:9/mcp' }],
      publicPath: '/gw',
      authServer: { registration: { dynamic: false }, clientMetadataDocuments: false },
    });
  });
  after(async () => {
    await gw.close();
  });

  test('authorization server metadata at every path-inserted and appended location', async () => {
    for (const path of [
      '.well-known/oauth-authorization-server/gw',
      '.well-known/openid-configuration/gw',
      'gw/.well-known/openid-configuration',
      'gw/.well-known/oauth-authorization-server',
    ]) {
      const { status, body } = await getJson(`${gw.url}${path}`);
      assert.equal(status, 200, path);
      assert.equal(body.issuer, `${gw.url}gw`);
      assert.equal(body.token_endpoint, `${gw.url}gw/oauth/token`);
      assert.equal(body.registration_endpoint, undefined, 'no registration endpoint when DCR is off');
      assert.equal(body.client_id_metadata_document_supported, false);
    }
    assert.equal((await fetch(`${gw.url}.well-known/oauth-authorization-server`)).status, 404);
  });

  test('resource metadata and JWKS under the path; the challenge names the RFC 9728 location', async () => {
    const prm = await getJson(`${gw.url}.well-known/oauth-protected-resource/gw/kube/mcp`);
    assert.equal(prm.body.resource, `${gw.url}gw/kube/mcp`);
    assert.deepEqual(prm.body.authorization_servers, [`${gw.url}gw`]);
    assert.equal((await getJson(`${gw.url}gw/.well-known/oauth-protected-resource/kube/mcp`)).status, 200);
    assert.equal((await getJson(`${gw.url}gw/.well-known/jwks.json`)).status, 200);
    const res = await fetch(`${gw.url}gw/kube/mcp`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', new RegExp(`resource_metadata="${gw.url}.well-known/oauth-protected-resource/gw/kube/mcp"`));
  });
});

describe('signing keys', () => {
  const warnings: string[] = [];
  const load = (pems: string[], devMode = false) => loadSigningKeys({ pems, devMode, warn: (m) => warnings.push(m) });

  test('ES256, RS256 and EdDSA are detected from the key and sign tokens that verify', async () => {
    for (const alg of ['ES256', 'RS256', 'EdDSA'] as const) {
      const keys = load([generateSigningKeyPem(alg)]);
      assert.equal(keys.signing.alg, alg);
      const issuer = createTokenIssuer({ issuer: 'https://gw.example', keys, accessTokenTtlMs: 60_000 });
      const { token } = await issuer.issueAccessToken({ subject: 's', resource: 'https://gw.example/a/mcp', clientId: 'c', scopes: [], sessionId: 'sid' });
      const claims = await verifyAccessToken(token, { issuer: 'https://gw.example', keys, audience: 'https://gw.example/a/mcp' });
      assert.equal(claims.sid, 'sid');
    }
  });

  test('an ephemeral key only in dev mode, with a warning', () => {
    assert.throws(() => load([]), /at least one signing key/);
    const keys = load([], true);
    assert.equal(keys.ephemeral, true);
    assert.equal(keys.signing.alg, 'ES256');
    assert.match(warnings.join('\n'), /ephemeral/);
  });

  test('unusable keys are refused with the entry named', () => {
    const pem = generateSigningKeyPem();
    const publicPem = createPublicKey(pem).export({ type: 'spki', format: 'pem' }) as string;
    assert.throws(() => load([publicPem]), /signingKeys\[0\]: the first key signs/);
    assert.throws(() => load([pem, pem]), /signingKeys\[1\]: the same key is listed twice/);
    assert.throws(() => load([pem, 'not a key']), /signingKeys\[1\]: not a PEM key/);
    assert.throws(() => load(['-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n']), /signingKeys\[0\]: unreadable/);
  });
});
