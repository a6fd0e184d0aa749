/**
 * Mode `token_exchange` (RFC 8693) against real peers: the development IdP (a real
 * oidc-provider) signs a user in over HTTP, and a real RFC 8693 token endpoint on loopback
 * verifies the subject token against that IdP's JWKS before it issues a token for the upstream.
 */
import assert from 'node:assert/strict';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Writable } from 'node:stream';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import type { AuthStores, IdpTokens } from '../../src/authserver/records.ts';
import { createAuthStores } from '../../src/authserver/stores.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createIdpSessionTokens } from '../../src/credentials/idp-session.ts';
import { ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT, createTokenExchangeCredential } from '../../src/credentials/token-exchange.ts';
import type { CredentialRequest, CredentialSource, Principal } from '../../src/credentials/types.ts';
import { HttpError } from '../../src/http/errors.ts';
import { createOidcIdpClient } from '../../src/idp/oidc.ts';
import { createGuardedFetch, type GuardedFetch } from '../../src/net/guarded-fetch.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';

const EXCHANGE_CLIENT = 'mcpgate-exchanger';
const EXCHANGE_SECRET = randomBytes(18).toString('base64url');
const AUDIENCE = 'https://api.example.test';

/** What the test exchange endpoint does with the next requests. */
type ExchangeMode = 'ok' | 'down' | 'invalid_client';

/** A real RFC 8693 token endpoint: client_secret_basic, subject token verified against the IdP's JWKS. */
async function startExchangeEndpoint(idp: DevIdp) {
  const jwks = createRemoteJWKSet(new URL(idp.jwksUri));
  const state = {
    mode: 'ok' as ExchangeMode,
    /** Subjects (`sub`) whose tokens are refused with invalid_request, as a policy would. */
    refusedSubjects: new Set<string>(),
    /** Subject tokens refused once each, as if revoked (the refreshed one passes). */
    refusedTokens: new Set<string>(),
    expiresIn: 120,
    requests: [] as URLSearchParams[],
    issued: 0,
  };
  const server = createServer((req, res) => void handle(req, res).catch(() => res.writeHead(500).end()));

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    state.requests.push(form);
    const answer = (status: number, body: Record<string, unknown>) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    if (state.mode === 'down') return answer(503, { error: 'temporarily_unavailable' });
    const expected = Buffer.from(`Basic ${Buffer.from(`${EXCHANGE_CLIENT}:${EXCHANGE_SECRET}`).toString('base64')}`);
    const given = Buffer.from(req.headers.authorization ?? '');
    if (state.mode === 'invalid_client' || given.length !== expected.length || !timingSafeEqual(given, expected)) return answer(401, { error: 'invalid_client' });
    if (form.get('grant_type') !== TOKEN_EXCHANGE_GRANT) return answer(400, { error: 'unsupported_grant_type' });
    if (form.get('subject_token_type') !== ACCESS_TOKEN_TYPE || form.get('requested_token_type') !== ACCESS_TOKEN_TYPE) return answer(400, { error: 'invalid_request' });
    if (form.get('audience') !== AUDIENCE) return answer(400, { error: 'invalid_target' });
    const subjectToken = form.get('subject_token') ?? '';
    let sub: string;
    try {
      ({ payload: { sub: sub = '' } } = await jwtVerify(subjectToken, jwks, { issuer: idp.issuer, audience: idp.audience }));
    } catch {
      return answer(400, { error: 'invalid_request', error_description: 'subject_token is invalid' });
    }
    if (state.refusedSubjects.has(sub) || state.refusedTokens.delete(subjectToken)) return answer(400, { error: 'invalid_request', error_description: 'subject_token is not acceptable' });
    state.issued++;
    return answer(200, {
      access_token: `xchg-${sub}-${state.issued}`,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: state.expiresIn,
      scope: form.get('scope') ?? undefined,
    });
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`,
    state,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

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
    const error = await credential.headers(request('alice')).then(() => assert.fail('expected 503'), (e: unknown) => e);
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
    const error = await credential.headers(request('alice')).then(() => assert.fail('expected 502'), (e: unknown) => e);
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
    const error = await credential.headers(request('bob')).then(() => assert.fail('expected 401'), (e: unknown) => e);
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 401);
    assert.match(error.headers['www-authenticate']!, /^Bearer resource_metadata="http:\/\/127\.0\.0\.1:1\/\.well-known\/oauth-protected-resource\/api\/mcp".*error="invalid_token"/);
    assert.equal(await stores.sessions.get('sid-bob'), undefined, 'the session ended');
  });
});
