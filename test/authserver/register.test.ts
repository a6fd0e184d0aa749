/**
 * `POST /oauth/register` (RFC 7591) on a real front door: the redirect URI rules of RFC 8252,
 * metadata checks, size limit, initial access token, rate limit, idle expiry.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { createBrowser, formAction } from '../upstream-oauth/browser.ts';
import { pkcePair, startLoginServer, type LoginServer } from './login-server.ts';

let idp: DevIdp;
let server: LoginServer;

before(async () => {
  idp = await startDevIdp();
  server = await startLoginServer({ idp });
});
after(async () => {
  await server?.close();
  await idp?.close();
});

async function register(body: unknown, init: { issuer?: string; headers?: Record<string, string>; raw?: string } = {}) {
  const res = await fetch(`${init.issuer ?? server.issuer}/oauth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...init.headers },
    body: init.raw ?? JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

describe('registration', () => {
  test('a public client by default: no secret, defaults filled, stored without one', async () => {
    const res = await register({ redirect_uris: ['http://127.0.0.1/callback'], client_name: 'Agent' });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(typeof res.body.client_id, 'string');
    assert.equal(res.body.client_secret, undefined);
    assert.equal(res.body.token_endpoint_auth_method, 'none');
    assert.deepEqual(res.body.grant_types, ['authorization_code', 'refresh_token']);
    assert.deepEqual(res.body.response_types, ['code']);
    assert.equal(res.body.client_name, 'Agent');
    const stored = await server.stores.clients.get(res.body.client_id as string);
    assert.equal(stored?.kind, 'dcr');
    assert.equal(stored?.secretHash, undefined);
    assert.deepEqual(stored?.redirectUris, ['http://127.0.0.1/callback']);
  });

  test('a confidential client gets its secret once; only its hash is stored', async () => {
    for (const method of ['client_secret_basic', 'client_secret_post']) {
      const res = await register({ redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: method });
      assert.equal(res.status, 201);
      const secret = res.body.client_secret as string;
      assert.ok(secret.length >= 43);
      assert.equal(res.body.client_secret_expires_at, 0);
      const raw = await server.store.get(`client:${res.body.client_id as string}`);
      assert.ok(raw && !raw.includes(secret), 'the plain secret is never stored');
      const stored = await server.stores.clients.get(res.body.client_id as string);
      assert.equal(stored?.secretHash, createHash('sha256').update(secret).digest('base64url'));
      assert.equal(stored?.tokenEndpointAuthMethod, method);
    }
  });

  const accepted = [
    'https://app.example.com/callback',
    'https://app.example.com:8443/cb?tenant=a',
    'http://127.0.0.1/callback',
    'http://127.0.0.1:33418/callback',
    'http://[::1]:9000/cb',
    'http://localhost:6274/oauth/callback',
    'com.example.app:/oauth2redirect',
    'cursor.app://anysphere.cursor-retrieval/oauth/callback',
    // Private-use schemes without a dot, as editors register them.
    'cursor://anysphere.cursor-retrieval/oauth/user-notes/callback',
    'windsurf://codeium.windsurf/oauth/callback',
    'vscode://vscode.github-authentication/did-authenticate',
    'vscode-insiders://vscode.github-authentication/did-authenticate',
    'myapp:/callback',
    'x-my+app.v2:callback',
  ];
  for (const uri of accepted) {
    test(`accepts the redirect URI ${uri}`, async () => {
      const res = await register({ redirect_uris: [uri] });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.deepEqual(res.body.redirect_uris, [uri]);
    });
  }

  const refused: Array<[string, unknown]> = [
    ['http on a public host', 'http://app.example.com/cb'],
    ['http on a private address', 'http://10.0.0.5/cb'],
    ['http on a look-alike of localhost', 'http://localhost.evil.example/cb'],
    ['a fragment', 'https://app.example.com/cb#frag'],
    ['an empty fragment', 'https://app.example.com/cb#'],
    ['credentials', 'https://user:pw@app.example.com/cb'],
    ['javascript:', 'javascript:alert(1)'],
    ['JAVASCRIPT: in capitals', 'JavaScript:alert(1)'],
    ['javascript: after a space', ' javascript:alert(1)'],
    ['javascript: cut by a tab', 'java\tscript:alert(1)'],
    ['javascript: made to look like a path', 'javascript://app.example.com/%0aalert(1)'],
    ['vbscript:', 'vbscript:msgbox(1)'],
    ['data:', 'data:text/html,<script>alert(1)</script>'],
    ['file:', 'file:///etc/passwd'],
    ['about:', 'about:blank'],
    ['blob:', 'blob:https://app.example.com/3f1c2a7e'],
    ['view-source:', 'view-source:https://app.example.com/'],
    ['ws:', 'ws://app.example.com/cb'],
    ['a fragment on a private-use scheme', 'cursor://anysphere.cursor-retrieval/cb#x'],
    ['credentials on a private-use scheme', 'cursor://user:pw@anysphere.cursor-retrieval/cb'],
    ['a user name on a private-use scheme', 'cursor://user@anysphere.cursor-retrieval/cb'],
    ['a newline', 'https://app.example.com/cb\n'],
    ['a relative reference', '/callback'],
    ['not a URI', 'not a uri'],
    ['an empty string', ''],
    ['a number', 42],
    ['a URI over 2000 characters', `https://app.example.com/${'a'.repeat(2000)}`],
  ];
  for (const [why, uri] of refused) {
    test(`refuses a redirect URI with ${why}`, async () => {
      const res = await register({ redirect_uris: ['https://ok.example.com/cb', uri] });
      assert.equal(res.status, 400);
      assert.equal(res.body.error, 'invalid_redirect_uri');
      assert.match(String(res.body.error_description), /redirect_uris\[1\]/);
    });
  }

  test('refuses missing, empty and too many redirect URIs', async () => {
    for (const body of [{}, { redirect_uris: [] }, { redirect_uris: 'https://a.example/cb' }, { redirect_uris: Array.from({ length: 11 }, (_, i) => `https://a.example/${i}`) }]) {
      const res = await register(body);
      assert.equal(res.status, 400);
      assert.equal(res.body.error, 'invalid_redirect_uri');
    }
  });

  const badMetadata: Array<[string, Record<string, unknown>]> = [
    ['only an unsupported grant type', { grant_types: ['client_credentials'] }],
    ['no authorization_code grant', { grant_types: ['refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'] }],
    ['an empty grant_types', { grant_types: [] }],
    ['only the implicit response type', { response_types: ['token'] }],
    ['an empty response_types', { response_types: [] }],
    ['an unsupported auth method', { token_endpoint_auth_method: 'private_key_jwt' }],
    ['a non-string client_name', { client_name: ['x'] }],
    ['a client_name with control characters', { client_name: 'Good\u202eApp' }],
    ['a client_name over 200 characters', { client_name: 'x'.repeat(201) }],
    ['a malformed scope', { scope: 'a  b' }],
    ['a non-http client_uri', { client_uri: 'javascript:alert(1)' }],
  ];
  for (const [why, extra] of badMetadata) {
    test(`refuses metadata with ${why}`, async () => {
      const res = await register({ redirect_uris: ['https://app.example.com/cb'], ...extra });
      assert.equal(res.status, 400);
      assert.equal(res.body.error, 'invalid_client_metadata');
    });
  }

  test('unsupported grant and response types are left out, and the response shows what was registered (RFC 7591 §3.2.1)', async () => {
    const res = await register({
      redirect_uris: ['https://app.example.com/cb'],
      grant_types: ['refresh_token', 'urn:ietf:params:oauth:grant-type:device_code', 'authorization_code', 'client_credentials', 'authorization_code'],
      response_types: ['code', 'token', 'code id_token'],
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.deepEqual(res.body.grant_types, ['authorization_code', 'refresh_token']);
    assert.deepEqual(res.body.response_types, ['code']);
    const stored = await server.stores.clients.get(res.body.client_id as string);
    assert.deepEqual(stored?.grantTypes, ['authorization_code', 'refresh_token']);

    // Only what was asked for: a client that did not ask for refresh_token does not get it.
    const codeOnly = await register({ redirect_uris: ['https://app.example.com/cb'], grant_types: ['authorization_code', 'implicit'] });
    assert.deepEqual(codeOnly.body.grant_types, ['authorization_code']);
  });

  test('an empty or blank scope is no scope: the client is not restricted to nothing', async () => {
    for (const scope of ['', ' ']) {
      const res = await register({ redirect_uris: ['https://app.example.com/cb'], scope });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.body.scope, undefined);
      assert.equal((await server.stores.clients.get(res.body.client_id as string))?.scope, undefined);
    }
  });

  test('refuses a body that is not a JSON object, and another media type', async () => {
    for (const raw of ['[]', 'null', '{"redirect_uris":', '"x"']) {
      const res = await register(undefined, { raw });
      assert.equal(res.status, 400, raw);
      assert.equal(res.body.error, 'invalid_client_metadata');
    }
    const res = await register(undefined, { raw: 'redirect_uris=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(res.status, 415);
  });

  test('accepts a body of exactly 16 KiB and refuses one byte more with 413', async () => {
    const base = JSON.stringify({ redirect_uris: ['https://app.example.com/cb'], padding: '' });
    const fill = (size: number) => JSON.stringify({ redirect_uris: ['https://app.example.com/cb'], padding: 'x'.repeat(size - base.length) });
    assert.equal((await register(undefined, { raw: fill(16 * 1024) })).status, 201);
    const res = await register(undefined, { raw: fill(16 * 1024 + 1) });
    assert.equal(res.status, 413);
    assert.equal(res.body.error, 'payload_too_large');
  });

  // Security review item 3: anonymous registrations were kept 90 days whether used or not.
  test('an unused registration lives ten minutes, an anonymous authorization request does not keep it', async () => {
    const id = (await register({ redirect_uris: [AGENT_REDIRECT] })).body.client_id as string;
    server.advance(9 * 60_000);
    assert.equal((await authorizeOnly(server, id)).status, 302, 'usable meanwhile');
    server.advance(2 * 60_000);
    assert.equal(await server.stores.clients.get(id), undefined, 'gone eleven minutes after registering');
  });

  test('its first sign-in at the IdP makes it live the idle period (90 days)', async () => {
    const id = (await register({ redirect_uris: [AGENT_REDIRECT] })).body.client_id as string;
    const consent = await signInFor(server, id, 'alice');
    assert.equal(consent.status, 200, 'the IdP login came back to the consent page');
    server.advance(89 * 86_400_000);
    assert.ok(await server.stores.clients.get(id), 'used: still registered 89 days later');
    server.advance(2 * 86_400_000);
    assert.equal(await server.stores.clients.get(id), undefined, 'idle for 91 days: gone');
  });
});

const AGENT_REDIRECT = 'http://127.0.0.1:33418/callback';

/** An authorization request and nothing more: what anyone can send without signing in. */
async function authorizeOnly(target: LoginServer, clientId: string): Promise<Response> {
  const params = new URLSearchParams({ client_id: clientId, redirect_uri: AGENT_REDIRECT, response_type: 'code', code_challenge: pkcePair().challenge, code_challenge_method: 'S256', state: 's', scope: 'mcp' });
  const res = await fetch(`${target.issuer}/oauth/authorize?${params}`, { redirect: 'manual' });
  await res.arrayBuffer();
  return res;
}

/** A browser: the authorization request, the IdP's login form, back to our callback (ends at the consent page). */
async function signInFor(target: LoginServer, clientId: string, login: string) {
  const params = new URLSearchParams({ client_id: clientId, redirect_uri: AGENT_REDIRECT, response_type: 'code', code_challenge: pkcePair().challenge, code_challenge_method: 'S256', state: 's', scope: 'mcp' });
  const browser = createBrowser();
  const form = await browser.open(`${target.issuer}/oauth/authorize?${params}`);
  assert.ok(form.url.startsWith(idp.issuer), `at the IdP's login form, not ${form.url} (${form.status})`);
  const password = idp.users.find((u) => u.login === login)!.password;
  return browser.submit(formAction(form, /\/login$/), { login, password }, { stopAt: (url) => url.origin === target.issuer && !url.pathname.startsWith('/oauth/') });
}

describe('what anonymous registrations and logins may leave in the store', () => {
  test('at most maxUnused registrations wait for their first use; past it a clear 503 with Retry-After, then room again', async () => {
    const small = await startLoginServer({ idp, registration: { dynamic: true, initialAccessToken: null, unusedTtl: 600_000, maxUnused: 3 } });
    try {
      for (let i = 0; i < 3; i++) assert.equal((await register({ redirect_uris: [AGENT_REDIRECT] }, { issuer: small.issuer })).status, 201);
      const refused = await register({ redirect_uris: [AGENT_REDIRECT] }, { issuer: small.issuer });
      assert.equal(refused.status, 503);
      assert.equal(refused.body.error, 'temporarily_unavailable');
      assert.match(String(refused.body.error_description), /waiting for their first use/);
      const retryAfter = Number(refused.headers.get('retry-after'));
      assert.ok(retryAfter >= 1 && retryAfter <= 600, `Retry-After ${retryAfter}`);
      assert.equal((await register({ redirect_uris: ['not a uri'] }, { issuer: small.issuer })).status, 400, 'a bad request still gets its own error');
      // The three have expired unused by the time two windows have passed.
      small.advance(2 * 600_000);
      assert.equal((await register({ redirect_uris: [AGENT_REDIRECT] }, { issuer: small.issuer })).status, 201);
    } finally {
      await small.close();
    }
  });

  test('a login past maxSessionsPerUser ends the oldest session through the session-ending path', async () => {
    const ended: string[] = [];
    const capped = await startLoginServer({ idp, maxSessionsPerUser: 2, onSessionEnded: async (sid) => void ended.push(sid) });
    try {
      const id = (await register({ redirect_uris: [AGENT_REDIRECT] }, { issuer: capped.issuer })).body.client_id as string;
      const sessionsOf = async (who: string) => {
        const ids = await capped.stores.sessions.listForUser(who);
        const live = await Promise.all(ids.map((sid) => capped.stores.sessions.get(sid)));
        return live.filter((s) => s !== undefined).sort((a, b) => a.createdAt - b.createdAt);
      };
      await signInFor(capped, id, 'bob');
      await signInFor(capped, id, 'alice');
      const [oldest] = await sessionsOf('alice');
      for (let i = 0; i < 3; i++) {
        capped.advance(1000);
        const page = await signInFor(capped, id, 'alice');
        assert.equal(page.status, 200);
      }
      const alice = await sessionsOf('alice');
      assert.equal(alice.length, 2, 'alice keeps her two newest sessions');
      assert.ok(!alice.some((s) => s.sessionId === oldest!.sessionId), 'the oldest ended');
      assert.equal(await capped.stores.idpTokens.get(oldest!.sessionId), undefined, 'with its IdP tokens');
      assert.equal(ended.length, 2, 'each through the session-ending path (its hooks ran)');
      assert.ok(ended.includes(oldest!.sessionId));
      assert.equal((await sessionsOf('bob')).length, 1, "another user's session is untouched");
    } finally {
      await capped.close();
    }
  });
});

describe('initial access token', () => {
  let gated: LoginServer;
  before(async () => {
    gated = await startLoginServer({ idp, registration: { dynamic: true, initialAccessToken: 'let-me-register-0123456789' } });
  });
  after(() => gated?.close());

  test('is required, compared exactly, and answered with a Bearer challenge', async () => {
    const body = { redirect_uris: ['https://app.example.com/cb'] };
    const missing = await register(body, { issuer: gated.issuer });
    assert.equal(missing.status, 401);
    assert.equal(missing.body.error, 'invalid_token');
    assert.equal(missing.headers.get('www-authenticate'), 'Bearer');
    for (const token of ['wrong', 'let-me-register-012345678', 'let-me-register-01234567890']) {
      const wrong = await register(body, { issuer: gated.issuer, headers: { authorization: `Bearer ${token}` } });
      assert.equal(wrong.status, 401);
      assert.match(wrong.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    }
    const right = await register(body, { issuer: gated.issuer, headers: { authorization: 'Bearer let-me-register-0123456789' } });
    assert.equal(right.status, 201);
  });
});

describe('registration switched off', () => {
  let closed: LoginServer;
  before(async () => {
    closed = await startLoginServer({ idp, registration: { dynamic: false, initialAccessToken: null } });
  });
  after(() => closed?.close());

  test('answers 404', async () => {
    const res = await register({ redirect_uris: ['https://app.example.com/cb'] }, { issuer: closed.issuer });
    assert.equal(res.status, 404);
  });
});

describe('rate limit', () => {
  let limited: LoginServer;
  before(async () => {
    limited = await startLoginServer({ idp, registrationLimit: 3 });
  });
  after(() => limited?.close());

  /** POST from a chosen loopback source address (127.0.0.0/8 is all ours), so two "clients" can be told apart. */
  function registerFrom(localAddress: string): Promise<{ status: number; retryAfter: string | undefined }> {
    const body = JSON.stringify({ redirect_uris: ['https://app.example.com/cb'] });
    return new Promise((resolve, reject) => {
      const req = request(`${limited.issuer}/oauth/register`, { method: 'POST', localAddress, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'] }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  test('refuses the request over the limit with 429 and Retry-After, per client address, until the window ends', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await registerFrom('127.0.0.1')).status, 201);
    const over = await registerFrom('127.0.0.1');
    assert.equal(over.status, 429);
    assert.ok(Number(over.retryAfter) >= 1 && Number(over.retryAfter) <= 60);
    assert.equal((await registerFrom('127.0.0.2')).status, 201, 'another address has its own budget');
    limited.advance(60_000);
    assert.equal((await registerFrom('127.0.0.1')).status, 201, 'a new window, a new budget');
  });
});

describe('the operator’s redirect scheme lists (authServer.registration.redirectSchemes)', () => {
  let listed: LoginServer;
  let denied: LoginServer;
  before(async () => {
    listed = await startLoginServer({ idp, redirectSchemes: { allow: ['cursor', 'vscode'], deny: [] } });
    denied = await startLoginServer({ idp, redirectSchemes: { deny: ['windsurf', 'http'] } });
  });
  after(async () => {
    await listed?.close();
    await denied?.close();
  });

  test('an allow list admits only its private-use schemes; https and loopback http stay accepted', async () => {
    for (const uri of ['cursor://anysphere.cursor-retrieval/oauth/callback', 'vscode://ext/cb', 'https://app.example.com/cb', 'http://127.0.0.1/cb']) {
      const res = await register({ redirect_uris: [uri] }, { issuer: listed.issuer });
      assert.equal(res.status, 201, `${uri}: ${JSON.stringify(res.body)}`);
    }
    const res = await register({ redirect_uris: ['https://app.example.com/cb', 'windsurf://codeium.windsurf/cb'] }, { issuer: listed.issuer });
    assert.equal(res.status, 400);
    assert.equal(res.body.error, 'invalid_redirect_uri');
    assert.equal(res.body.error_description, 'redirect_uris[1] uses the windsurf: scheme, which this server does not accept (accepted: https, http (loopback), cursor:, vscode:)');
  });

  test('a deny list refuses its schemes, http included, and leaves the others open', async () => {
    for (const uri of ['windsurf://codeium.windsurf/cb', 'http://127.0.0.1:33418/']) {
      const res = await register({ redirect_uris: [uri] }, { issuer: denied.issuer });
      assert.equal(res.status, 400, uri);
      assert.match(String(res.body.error_description), /which this server does not accept/);
    }
    assert.equal((await register({ redirect_uris: ['cursor://anysphere.cursor-retrieval/cb'] }, { issuer: denied.issuer })).status, 201);
  });

  test('a scheme denied after a client registered is refused at the authorization request', async () => {
    // Registered at `denied` directly in the store, as if before the operator added windsurf to the list.
    const uri = 'windsurf://codeium.windsurf/cb';
    await denied.stores.clients.put(
      { clientId: 'old-windsurf', kind: 'dcr', tokenEndpointAuthMethod: 'none', redirectUris: [uri], grantTypes: ['authorization_code'], createdAt: denied.now() },
      86_400_000,
    );
    const params = new URLSearchParams({
      client_id: 'old-windsurf',
      redirect_uri: uri,
      response_type: 'code',
      code_challenge: pkcePair().challenge,
      code_challenge_method: 'S256',
      state: 's',
      resource: denied.resource('kube'),
    });
    const res = await fetch(`${denied.issuer}/oauth/authorize?${params}`, { redirect: 'manual' });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('location'), null, 'never redirected to a refused scheme');
    assert.match(await res.text(), /uses the windsurf: scheme, which this server does not accept/);
  });
});
