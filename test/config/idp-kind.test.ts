/**
 * `idp.kind`: `oidc` (the default, an OpenID Connect issuer) or `oauth2` (plain OAuth 2.0 with a
 * user-info API). Every wrong shape is reported with its path, and what cannot work with a plain
 * OAuth 2.0 IdP (no ID token) is refused before the gateway starts.
 */
import { generateKeyPairSync } from 'node:crypto';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { ConfigError, parseConfig } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';

/** A real signing key: the schema parses signing keys. */
const SIGNING_PEM = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

const GITHUB = {
  kind: 'oauth2',
  authorizationEndpoint: 'https://github.com/login/oauth/authorize',
  tokenEndpoint: 'https://github.com/login/oauth/access_token',
  userinfoEndpoint: 'https://api.github.com/user',
  clientId: 'Iv1.abc',
  clientSecret: 'env:SECRET',
  userClaim: 'login',
};

const sources = {
  env: { SECRET: 's3cret', MCPGATE_IDP_CLIENT_SECRET: 's3cret', VALKEY_PASSWORD: 'p', MCPGATE_STORE_KEY: Buffer.alloc(32, 1).toString('base64') },
  readFile: () => SIGNING_PEM,
};

function parse(idp: Record<string, unknown>, options: { devMode?: boolean; auth?: Record<string, unknown> } = {}): Config {
  const devMode = options.devMode ?? false;
  return parseConfig(
    JSON.stringify({
      server: { publicUrl: devMode ? 'http://127.0.0.1:8080' : 'https://mcp.example.com', devMode },
      idp,
      authServer: { signingKeys: ['file:/k.pem'] },
      upstreams: [{ name: 'gh', url: 'https://mcp.internal/mcp', auth: options.auth ?? { mode: 'idp' } }],
    }),
    'test',
    sources,
  );
}

function problems(idp: Record<string, unknown>, options?: Parameters<typeof parse>[1]): string[] {
  try {
    parse(idp, options);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe('idp.kind', () => {
  test('absent: OpenID Connect, as before', () => {
    const idp = parse({ issuer: 'https://login.example.com', clientId: 'mcpgate' }).idp!;
    assert.equal(idp.kind, undefined);
    assert.ok(idp.kind !== 'oauth2');
    assert.equal(idp.issuer, 'https://login.example.com');
    assert.equal(idp.userClaim, 'sub');
  });

  test('oauth2: the endpoints, a user-info path and defaults (no scopes, client_secret_post)', () => {
    const idp = parse(GITHUB).idp!;
    assert.equal(idp.kind, 'oauth2');
    assert.ok(idp.kind === 'oauth2');
    assert.equal(idp.userinfoEndpoint, 'https://api.github.com/user');
    assert.equal(idp.clientSecret, 's3cret');
    assert.deepEqual(idp.scopes, []);
    assert.equal(idp.tokenEndpointAuthMethod, 'client_secret_post');
    assert.equal(idp.revocationEndpoint, undefined);
    assert.deepEqual(idp.authParams, {});
    assert.equal(parse({ ...GITHUB, userClaim: 'data.user.id' }).idp!.userClaim, 'data.user.id');
  });

  test('an unknown kind, and oauth2 without what it needs, are named with their paths', () => {
    assert.deepEqual(problems({ ...GITHUB, kind: 'saml' }), ['idp.kind: kind must be "oidc" (the default: an OpenID Connect issuer) or "oauth2" (plain OAuth 2.0 with a user-info API)']);
    const { userinfoEndpoint: _u, userClaim: _c, ...partial } = GITHUB;
    assert.deepEqual(problems(partial), [
      'idp.userinfoEndpoint: Invalid input: expected string, received undefined',
      'idp.userClaim: is required with kind oauth2: the member of the user-info JSON that names the user, e.g. "id" or "login"',
    ]);
    assert.deepEqual(problems({ ...GITHUB, userClaim: 'a..b' }), ['idp.userClaim: must be a member of the user-info JSON, or a dotted path into it ("id", "login", "data.user.id")']);
    assert.deepEqual(problems({ ...GITHUB, issuer: 'https://github.com' }), ['idp: unknown key "issuer"']);
    assert.deepEqual(problems({ ...GITHUB, clientSecret: 'inline-secret' }), ['idp.clientSecret: must be a secret reference (env:NAME or file:/path), never an inline value']);
  });

  test('http endpoints only in devMode', () => {
    const http = { ...GITHUB, authorizationEndpoint: 'http://gh.internal/login/oauth/authorize', userinfoEndpoint: 'http://gh.internal/api/v3/user', revocationEndpoint: 'http://gh.internal/revoke' };
    assert.deepEqual(problems(http), [
      'idp.authorizationEndpoint: must be an https URL (http is allowed only with devMode: true)',
      'idp.userinfoEndpoint: must be an https URL (http is allowed only with devMode: true)',
      'idp.revocationEndpoint: must be an https URL (http is allowed only with devMode: true)',
    ]);
    assert.deepEqual(problems(http, { devMode: true }), []);
  });

  test('mode id_token is refused with oauth2: there is no ID token to forward', () => {
    assert.deepEqual(problems(GITHUB, { auth: { mode: 'id_token' } }), [
      'upstreams[0].auth.mode: mode "id_token" needs an OpenID Connect IdP: idp.kind oauth2 issues no ID token (use mode idp or token_exchange)',
    ]);
    assert.deepEqual(problems({ issuer: 'https://login.example.com', clientId: 'mcpgate' }, { auth: { mode: 'id_token' } }), []);
  });

  test('the GitHub preset in deploy/examples parses through the real schema', () => {
    const text = readFileSync(new URL('../../deploy/examples/github.yaml', import.meta.url), 'utf8');
    const config = parseConfig(text, 'github.yaml', sources);
    assert.equal(config.idp?.kind, 'oauth2');
    assert.equal(config.upstreams[0]!.auth.mode, 'idp');
  });
});
