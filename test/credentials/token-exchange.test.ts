/**
 * Mode `token_exchange` (RFC 8693) against real peers: the development IdP (a real
 * oidc-provider) signs a user in over HTTP, and a real RFC 8693 token endpoint on loopback
 * (`test/support/exchange-endpoint.ts`) verifies the subject token against that IdP's JWKS before
 * it issues a token for the upstream.
 */
import assert from 'node:assert/strict';
import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Writable } from 'node:stream';
import { decodeJwt } from 'jose';
import type { AuthStores, IdpTokens } from '../../src/authserver/records/records.ts';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createIdpSessionTokens } from '../../src/credentials/idp-session.ts';
import { ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT, createTokenExchangeCredential, type TokenExchangeOptions } from '../../src/credentials/token-exchange.ts';
import type { CredentialRequest, CredentialSource, Principal } from '../../src/credentials/types.ts';
import { HttpError } from '../../src/http/errors.ts';
import { createOidcIdpClient } from '../../src/idp/oidc.ts';
import { createGuardedFetch, type GuardedFetch } from '../../src/net/guarded-fetch.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createGatewayMetrics, createRegistry } from '../../src/observability/metrics.ts';
import { metricValue } from '../support/metrics.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { AUDIENCE, EXCHANGE_CLIENT, EXCHANGE_SECRET, startExchangeEndpoint } from '../support/exchange-endpoint.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';

/** Signs `login` in at the dev IdP through its HTML login form, with plain HTTP and a cookie jar. */
async function signIn(idp: DevIdp, login: string, now: () => number): Promise<IdpTokens> {
  const redirectUri = 'http://127.0.0.1:1/oauth/callback';
  const config = parseConfig(
    JSON.stringify({ server: { publicUrl: 'http://127.0.0.1:1', devMode: true }, idp: { issuer: idp.issuer, clientId: idp.clientId, clientSecret: 'env:S' }, upstreams: [{ name: 'x', url: 'http://127.0.0.1:1/mcp' }] }),
    'signin',
    { env: { S: idp.clientSecret }, readFile: () => '' },
  );
  const client = createOidcIdpClient({ config: config.idp!, redirectUri, devMode: true, now });
  const state = randomBytes(12).toString('base64url');
  const start = await client.startLogin(state);
  const jar = new Map<string, string>();
  let url = start.url;
  let init: RequestInit = {};
  for (let hop = 0; hop < 20; hop++) {
    const response = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers as Record<string, string>), cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') } });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const [name, ...value] = pair!.split('=');
      jar.set(name!.trim(), value.join('='));
    }
    init = {};
    const location = response.headers.get('location');
    if (location) {
      const next = new URL(location, url);
      if (next.href.startsWith(redirectUri)) {
        return (await client.finishLogin(next, { state, codeVerifier: start.codeVerifier, nonce: start.nonce })).tokens;
      }
      url = next.href;
      continue;
    }
    const html = await response.text();
    const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
    if (!action) throw new Error(`unexpected page at the IdP (${response.status})`);
    const user = idp.users.find((u) => u.login === login)!;
    url = new URL(action, url).href;
    init = { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ login: user.login, password: user.password }).toString() };
  }
  throw new Error('too many redirects at the IdP');
}

describe('token_exchange credential', () => {
  let idp: DevIdp;
  let endpoint: Awaited<ReturnType<typeof startExchangeEndpoint>>;
  let fetcher: GuardedFetch;
  let stores: AuthStores;
  let t = Date.now();
  const now = () => t;
  const principals: Record<string, Principal> = {};
  let credential: CredentialSource;
  const request = (who: string): CredentialRequest => ({ principal: principals[who], rpc: undefined, mcpSessionId: undefined, signal: new AbortController().signal });

  before(async () => {
    idp = await startDevIdp({ accessTokenTtlSeconds: 300, users: ['alice', 'bob', 'carol'].map((login) => ({ login, password: randomBytes(6).toString('base64url') })) });
    endpoint = await startExchangeEndpoint(idp);
    fetcher = createGuardedFetch({ allowHttp: true, allowPrivate: true });
    stores = createAuthStores({ store: createMemoryStore({ now }), sealer: createSealer({ keys: [{ id: 'k1', key: randomBytes(32) }] }), now });
    const logger = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
    const idpClient = createOidcIdpClient({
      config: parseConfig(
        JSON.stringify({ server: { publicUrl: 'http://127.0.0.1:1', devMode: true }, idp: { issuer: idp.issuer, clientId: idp.clientId, clientSecret: 'env:S' }, upstreams: [{ name: 'x', url: 'http://127.0.0.1:1/mcp' }] }),
        'refresh',
        { env: { S: idp.clientSecret }, readFile: () => '' },
      ).idp!,
      redirectUri: 'http://127.0.0.1:1/oauth/callback',
      devMode: true,
      now,
    });
    for (const login of ['alice', 'bob', 'carol']) {
      const sessionId = `sid-${login}`;
      await stores.sessions.put({ sessionId, subject: login, clientId: 'agent', createdAt: t, expiresAt: t + 86_400_000 });
      await stores.idpTokens.put(sessionId, await signIn(idp, login, now), 86_400_000);
      principals[login] = { subject: login, sessionId, clientId: 'agent', scopes: ['mcp'], expiresAt: Math.floor(t / 1000) + 600 };
    }
    credential = createTokenExchangeCredential({
      upstream: { name: 'api', resource: 'http://127.0.0.1:1/api/mcp', scopes: ['mcp'] },
      tokenEndpoint: endpoint.url,
      audience: AUDIENCE,
      scopes: ['read', 'write'],
      clientId: EXCHANGE_CLIENT,
      clientSecret: EXCHANGE_SECRET,
      session: createIdpSessionTokens({ stores, idp: idpClient, logger, now }),
      endSession: (sid) => stores.sessions.revoke(sid),
      fetch: fetcher,
      logger,
    });
  });

  after(async () => {
    await endpoint?.close();
    await fetcher?.close();
    await idp?.close();
  });

  test('exchanges the session IdP access token per RFC 8693 and caches the result', async () => {
    const idpTokens = (await stores.idpTokens.get('sid-alice'))!;
    const headers = await credential.headers(request('alice'));
    assert.equal(headers.authorization, 'Bearer xchg-alice-1');
    assert.equal(endpoint.state.requests.length, 1);
    const form = endpoint.state.requests[0]!;
    assert.deepEqual(Object.fromEntries(form), {
      grant_type: TOKEN_EXCHANGE_GRANT,
      subject_token: idpTokens.accessToken,
      subject_token_type: ACCESS_TOKEN_TYPE,
      requested_token_type: ACCESS_TOKEN_TYPE,
      audience: AUDIENCE,
      scope: 'read write',
    });
    assert.equal(decodeJwt(idpTokens.accessToken).aud, idp.audience, 'the subject token is the real IdP access token');

    assert.equal((await credential.headers(request('alice'))).authorization, 'Bearer xchg-alice-1');
    assert.equal(endpoint.state.requests.length, 1, 'the second call made no exchange');
  });

  test('concurrent callers share one exchange', async () => {
    const before = endpoint.state.requests.length;
    const all = await Promise.all(Array.from({ length: 5 }, () => credential.headers(request('carol'))));
    assert.equal(new Set(all.map((h) => h.authorization)).size, 1);
    assert.equal(endpoint.state.requests.length, before + 1);
  });

  test('exchanges again shortly before expires_in, and refreshes the IdP token at the IdP first when it is about to expire', async () => {
    const before = endpoint.state.requests.length;
    t += 89_000; // 120 s token, renewed 30 s before it expires
    assert.equal((await credential.headers(request('alice'))).authorization, 'Bearer xchg-alice-1');
    assert.equal(endpoint.state.requests.length, before);
    t += 2_000;
    const renewed = (await credential.headers(request('alice'))).authorization;
    assert.notEqual(renewed, 'Bearer xchg-alice-1');
    assert.equal(endpoint.state.requests.length, before + 1);

    const refreshesBefore = idp.refreshCount();
    const oldSubject = (await stores.idpTokens.get('sid-alice'))!.accessToken;
    t += 200_000; // past the IdP token's 300 s minus the 60 s margin, and past the exchanged token's renewal
    await credential.headers(request('alice'));
    assert.equal(idp.refreshCount(), refreshesBefore + 1, 'one refresh at the real IdP');
    const newSubject = (await stores.idpTokens.get('sid-alice'))!.accessToken;
    assert.notEqual(newSubject, oldSubject);
    assert.equal(endpoint.state.requests.at(-1)!.get('subject_token'), newSubject, 'the fresh IdP token was exchanged');
  });

  test('an upstream 401 drops the cached token and retries once with a fresh exchange', async () => {
    const req = request('alice');
    const sent = (await credential.headers(req)).authorization;
    const before = endpoint.state.requests.length;
    assert.deepEqual(await credential.rejected(req, { status: 401, headers: {}, body: Buffer.alloc(0) }, 0), { action: 'retry' });
    const again = (await credential.headers(request('alice'))).authorization;
    assert.notEqual(again, sent);
    assert.equal(endpoint.state.requests.length, before + 1);
    const second = await credential.rejected(req, { status: 401, headers: {}, body: Buffer.alloc(0) }, 1);
    assert.equal(second.action, 'respond');
    assert.equal(second.action === 'respond' && (second.error as HttpError).status, 502);
  });

  test('5xx from the exchange endpoint is a 503 with Retry-After; nothing cached, the session kept', async () => {
    t += 120_000; // the cached token is due for renewal
    endpoint.state.mode = 'down';
    const error = await Promise.resolve(credential.headers(request('alice'))).then(() => assert.fail('expected 503'), (e: unknown) => e);
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 503);
    assert.equal(error.headers['retry-after'], '5');
    assert.ok(await stores.sessions.get('sid-alice'), 'an outage is never a logout');
    endpoint.state.mode = 'ok';
    assert.match((await credential.headers(request('alice'))).authorization!, /^Bearer xchg-alice-/);
  });

  test('invalid_client is our configuration: 502, the session kept', async () => {
    t += 120_000;
    endpoint.state.mode = 'invalid_client';
    const error = await Promise.resolve(credential.headers(request('alice'))).then(() => assert.fail('expected 502'), (e: unknown) => e);
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 502);
    assert.ok(await stores.sessions.get('sid-alice'));
    endpoint.state.mode = 'ok';
  });

  test('a refused subject token is refreshed at the IdP and exchanged once more', async () => {
    t += 120_000;
    const subject = (await stores.idpTokens.get('sid-alice'))!.accessToken;
    endpoint.state.refusedTokens.add(subject);
    const refreshesBefore = idp.refreshCount();
    assert.match((await credential.headers(request('alice'))).authorization!, /^Bearer xchg-alice-/);
    assert.equal(idp.refreshCount(), refreshesBefore + 1);
    assert.ok(await stores.sessions.get('sid-alice'));
  });

  test('a subject refused even after a refresh ends the session: 401 re-login', async () => {
    endpoint.state.refusedSubjects.add('bob');
    const error = await Promise.resolve(credential.headers(request('bob'))).then(() => assert.fail('expected 401'), (e: unknown) => e);
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 401);
    assert.match(error.headers['www-authenticate']!, /^Bearer resource_metadata="http:\/\/127\.0\.0\.1:1\/\.well-known\/oauth-protected-resource\/api\/mcp".*error="invalid_token"/);
    assert.equal(await stores.sessions.get('sid-bob'), undefined, 'the session ended');
  });
});

describe('token_exchange as real deployments need it: subject token, extra parameters, target, issuer, metrics', () => {
  let idp: DevIdp;
  let endpoint: Awaited<ReturnType<typeof startExchangeEndpoint>>;
  let fetcher: GuardedFetch;
  let stores: AuthStores;
  const t = Date.now();
  const now = () => t;
  const logger = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
  const registry = createRegistry();
  const metrics = createGatewayMetrics(registry);
  const principal: Principal = { subject: 'alice', sessionId: 'sid-alice', clientId: 'agent', scopes: ['mcp'], expiresAt: Math.floor(t / 1000) + 600 };
  const request = (): CredentialRequest => ({ principal, rpc: undefined, mcpSessionId: undefined, signal: new AbortController().signal });
  let sessionTokens: ReturnType<typeof createIdpSessionTokens>;
  const credentialFor = (name: string, options: Partial<TokenExchangeOptions>) =>
    createTokenExchangeCredential({
      upstream: { name, resource: `http://127.0.0.1:1/${name}/mcp`, scopes: ['mcp'] },
      tokenEndpoint: endpoint.url,
      scopes: [],
      clientId: EXCHANGE_CLIENT,
      clientSecret: EXCHANGE_SECRET,
      session: sessionTokens,
      endSession: (sid) => stores.sessions.revoke(sid),
      fetch: fetcher,
      logger,
      exchanges: metrics.tokenExchanges,
      ...options,
    });
  const exchanges = (upstream: string, outcome: string) => metricValue(registry.render(), 'mcpgate_token_exchanges_total', { upstream, outcome });

  before(async () => {
    idp = await startDevIdp({ accessTokenTtlSeconds: 300, users: [{ login: 'alice', password: randomBytes(6).toString('base64url') }] });
    endpoint = await startExchangeEndpoint(idp);
    fetcher = createGuardedFetch({ allowHttp: true, allowPrivate: true });
    stores = createAuthStores({ store: createMemoryStore({ now }), sealer: createSealer({ keys: [{ id: 'k1', key: randomBytes(32) }] }), now });
    await stores.sessions.put({ sessionId: 'sid-alice', subject: 'alice', clientId: 'agent', createdAt: t, expiresAt: t + 86_400_000 });
    await stores.idpTokens.put('sid-alice', await signIn(idp, 'alice', now), 86_400_000);
    const idpClient = createOidcIdpClient({
      config: { issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret, scopes: ['openid', 'offline_access'], userClaim: 'sub', authParams: {} },
      redirectUri: 'http://127.0.0.1:1/oauth/callback',
      devMode: true,
      now,
    });
    sessionTokens = createIdpSessionTokens({ stores, idp: idpClient, logger, now });
  });
  after(async () => {
    await endpoint?.close();
    await fetcher?.close();
    await idp?.close();
  });

  test('subjectToken id_token, extraParams, audience, several resources and scopes are what the request carries', async () => {
    const credential = credentialFor('dex', {
      subjectToken: 'id_token',
      extraParams: { connector_id: 'github' },
      audience: AUDIENCE,
      resource: ['https://api.example.test/v1', 'https://files.example.test/'],
      scopes: ['read', 'write'],
    });
    assert.match((await credential.headers(request())).authorization!, /^Bearer xchg-alice-/);
    const form = endpoint.state.requests.at(-1)!;
    const idToken = (await stores.idpTokens.get('sid-alice'))!.idToken!;
    assert.ok(idToken, 'the session has an ID token');
    assert.equal(form.get('subject_token'), idToken, 'the ID token, not the access token');
    assert.equal(form.get('subject_token_type'), ID_TOKEN_TYPE);
    assert.equal(form.get('requested_token_type'), ACCESS_TOKEN_TYPE);
    assert.equal(form.get('connector_id'), 'github');
    assert.equal(form.get('audience'), AUDIENCE);
    assert.deepEqual(form.getAll('resource'), ['https://api.example.test/v1', 'https://files.example.test/']);
    assert.equal(form.get('scope'), 'read write');
  });

  test('resource without audience; the default subject is the access token', async () => {
    const credential = credentialFor('files', { resource: ['https://files.example.test/'] });
    await credential.headers(request());
    const form = endpoint.state.requests.at(-1)!;
    assert.equal(form.get('audience'), null);
    assert.deepEqual(form.getAll('resource'), ['https://files.example.test/']);
    assert.equal(form.get('subject_token'), (await stores.idpTokens.get('sid-alice'))!.accessToken);
    assert.equal(form.get('subject_token_type'), ACCESS_TOKEN_TYPE);
    assert.equal(form.has('scope'), false, 'no scopes configured: no scope parameter');
  });

  test('expectedIssuer: a JWT from that issuer is used; one from another issuer is refused with 502, not cached, the session kept', async () => {
    endpoint.state.jwtIssuer = 'https://sts.example.test/realms/tools';
    try {
      const good = credentialFor('realm-ok', { audience: AUDIENCE, expectedIssuer: 'https://sts.example.test/realms/tools' });
      const token = (await good.headers(request())).authorization!.slice('Bearer '.length);
      assert.equal(decodeJwt(token).iss, 'https://sts.example.test/realms/tools');

      const wrong = credentialFor('realm-wrong', { audience: AUDIENCE, expectedIssuer: 'https://sts.example.test/realms/apps' });
      const before = endpoint.state.requests.length;
      for (let i = 0; i < 2; i++) {
        const error = await Promise.resolve(wrong.headers(request())).then(() => assert.fail('expected 502'), (e: unknown) => e);
        assert.ok(error instanceof HttpError);
        assert.equal(error.status, 502);
        assert.match(error.message, /unexpected issuer \(expected https:\/\/sts\.example\.test\/realms\/apps\)/);
      }
      assert.equal(endpoint.state.requests.length, before + 2, 'nothing cached: each request exchanged again');
      assert.ok(await stores.sessions.get('sid-alice'), 'our configuration is wrong, not the sign-in');
    } finally {
      endpoint.state.jwtIssuer = undefined;
    }
    // An opaque token carries no issuer to compare: it passes.
    const opaque = credentialFor('opaque', { audience: AUDIENCE, expectedIssuer: 'https://sts.example.test/realms/apps' });
    assert.match((await opaque.headers(request())).authorization!, /^Bearer xchg-alice-/);
  });

  test('mcpgate_token_exchanges_total counts hits, misses and failures per upstream', async () => {
    const credential = credentialFor('counted', { audience: AUDIENCE });
    await credential.headers(request());
    await credential.headers(request());
    await credential.headers(request());
    assert.equal(exchanges('counted', 'miss'), 1);
    assert.equal(exchanges('counted', 'hit'), 2);
    assert.equal(exchanges('counted', 'failure'), 0);
    assert.equal(exchanges('realm-wrong', 'failure'), 2, 'the refused issuer counted as failures');
    endpoint.state.mode = 'down';
    try {
      const down = credentialFor('down', { audience: AUDIENCE });
      await assert.rejects(Promise.resolve(down.headers(request())), (e: unknown) => e instanceof HttpError && e.status === 503);
      assert.equal(exchanges('down', 'failure'), 1);
      assert.equal(exchanges('down', 'miss'), 0);
    } finally {
      endpoint.state.mode = 'ok';
    }
  });

  test('options are checked when the credential is made', () => {
    assert.throws(() => credentialFor('x', { audience: undefined, resource: [] }), /audience or resource/);
    assert.throws(() => credentialFor('x', { audience: AUDIENCE, extraParams: { subject_token: 'mine' } }), /subject_token is set by the exchange/);
  });
});

describe('token_exchange configuration', () => {
  const parse = (auth: Record<string, unknown>, extra: { devMode?: boolean; idp?: Record<string, unknown> } = {}) =>
    parseConfig(
      JSON.stringify({
        server: { publicUrl: extra.devMode === false ? 'https://gw.example.test' : 'http://127.0.0.1:1', devMode: extra.devMode ?? true },
        idp: extra.idp ?? { issuer: 'https://idp.example.test', clientId: 'mcpgate' },
        authServer: { signingKeys: ['file:/k.pem'] },
        upstreams: [{ name: 'api', url: 'https://api.example.test/mcp', auth: { mode: 'token_exchange', clientId: 'x', ...auth } }],
      }),
      'test',
      { env: {}, readFile: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
    );
  const problems = (auth: Record<string, unknown>, extra?: Parameters<typeof parse>[1]) => {
    try {
      parse(auth, extra);
      return [];
    } catch (error) {
      return (error as { problems?: string[] }).problems ?? [String(error)];
    }
  };

  test('the new keys parse; resource may be one URI or a list', () => {
    const auth = parse({
      tokenEndpoint: 'https://sts.example.test/token',
      subjectToken: 'id_token',
      resource: 'https://api.example.test/',
      extraParams: { connector_id: 'github' },
      expectedIssuer: 'https://sts.example.test/realms/tools',
    }).upstreams[0]!.auth;
    assert.equal(auth.mode, 'token_exchange');
    assert.ok(auth.mode === 'token_exchange');
    assert.deepEqual(auth.resource, ['https://api.example.test/']);
    assert.equal(auth.subjectToken, 'id_token');
    assert.deepEqual(auth.extraParams, { connector_id: 'github' });
    assert.equal(auth.expectedIssuer, 'https://sts.example.test/realms/tools');
    assert.equal(auth.audience, undefined);
  });

  test('every wrong shape is named with its path', () => {
    assert.deepEqual(problems({ tokenEndpoint: 'https://sts.example.test/token' }), ['upstreams[0].auth: needs audience or resource (or both): the token the exchange issues must be bound to the upstream']);
    assert.deepEqual(problems({ tokenEndpoint: 'https://sts.example.test/token', audience: 'a', extraParams: { grant_type: 'password' } }), [
      "upstreams[0].auth.extraParams.grant_type: is set by mcpgate (use the mode's own keys: subjectToken, audience, resource, scopes, clientId, clientSecret)",
    ]);
    assert.match(problems({ tokenEndpoint: 'https://sts.example.test/token', audience: 'a', subjectToken: 'refresh_token' })[0]!, /^upstreams\[0\]\.auth\.subjectToken: /);
    assert.match(problems({ tokenEndpoint: 'https://sts.example.test/token', resource: ['not a uri'] })[0]!, /^upstreams\[0\]\.auth\.resource/);
    assert.deepEqual(problems({ tokenEndpoint: 'http://10.0.0.5/token', audience: 'a' }, { devMode: false }), [
      'upstreams[0].auth.tokenEndpoint: must be an https URL (http is allowed only with devMode: true)',
    ]);
    const oauth2 = { kind: 'oauth2', authorizationEndpoint: 'https://github.com/login/oauth/authorize', tokenEndpoint: 'https://github.com/login/oauth/access_token', userinfoEndpoint: 'https://api.github.com/user', clientId: 'c', userClaim: 'id' };
    assert.deepEqual(problems({ tokenEndpoint: 'https://sts.example.test/token', audience: 'a', subjectToken: 'id_token' }, { idp: oauth2 }), [
      'upstreams[0].auth.subjectToken: must be access_token: idp.kind oauth2 issues no ID token',
    ]);
  });
});
