/**
 * `GET /oauth/authorize` and `GET /oauth/callback` against a real development IdP: every bad
 * input gets the right error, as an HTML page while the redirect URI is not verified and as an
 * RFC 6749 §4.1.2.1 redirect (with `state` and RFC 9207 `iss`) afterwards. Never a 500.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { pkcePair, registerClient, startLoginServer, type LoginServer } from './login-server.ts';

let idp: DevIdp;
let one: LoginServer; // one upstream
let two: LoginServer; // two upstreams
let clientId: string;
let twoUriClient: string;
const redirectUri = 'https://agent.example.com/callback';
const { challenge } = pkcePair();

before(async () => {
  idp = await startDevIdp();
  one = await startLoginServer({ idp });
  two = await startLoginServer({ idp, upstreams: ['kube', 'search'] });
  clientId = (await registerClient(one.issuer, { redirect_uris: [redirectUri, 'http://127.0.0.1/cb'], client_name: 'Agent' })).client_id;
  twoUriClient = (await registerClient(two.issuer, { redirect_uris: [redirectUri, 'https://agent.example.com/other'] })).client_id;
});
after(async () => {
  await one?.close();
  await two?.close();
  await idp?.close();
});

function validParams(overrides: Record<string, string | string[] | null> = {}, id = clientId): URLSearchParams {
  const base: Record<string, string | string[] | null> = {
    client_id: id,
    redirect_uri: redirectUri,
    response_type: 'code',
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: 'agent-state-1',
    scope: 'mcp',
    ...overrides,
  };
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(base)) {
    if (value === null) continue;
    for (const v of Array.isArray(value) ? value : [value]) params.append(name, v);
  }
  return params;
}

async function authorize(params: URLSearchParams, server = one) {
  const res = await fetch(`${server.issuer}/oauth/authorize?${params}`, { redirect: 'manual' });
  return { status: res.status, headers: res.headers, location: res.headers.get('location'), text: await res.text() };
}

/** An error page: HTML, the status given, no redirect, never framed. */
function assertErrorPage(res: Awaited<ReturnType<typeof authorize>>, status: number, text: RegExp) {
  assert.equal(res.status, status);
  assert.equal(res.location, null, 'never redirects to an unverified URI');
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(res.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  assert.match(res.text, text);
}

/** An error sent back to the client's redirect URI. */
function assertErrorRedirect(res: Awaited<ReturnType<typeof authorize>>, error: string, options: { to?: string; state?: string | null; server?: LoginServer } = {}) {
  assert.equal(res.status, 303, res.text);
  const location = new URL(res.location!);
  assert.equal(`${location.origin}${location.pathname}`, options.to ?? redirectUri);
  assert.equal(location.searchParams.get('error'), error, location.searchParams.get('error_description') ?? '');
  assert.equal(location.searchParams.get('state'), options.state === undefined ? 'agent-state-1' : options.state);
  assert.equal(location.searchParams.get('iss'), (options.server ?? one).issuer);
  assert.equal(location.searchParams.get('code'), null);
}

describe('before the redirect URI is verified: an HTML page', () => {
  test('no client_id', async () => assertErrorPage(await authorize(validParams({ client_id: null })), 400, /client_id is missing/));
  test('client_id twice', async () => assertErrorPage(await authorize(validParams({ client_id: [clientId, clientId] })), 400, /repeats the client_id/));
  test('an unknown client', async () => assertErrorPage(await authorize(validParams({ client_id: 'nobody' })), 400, /not registered/));
  test('a redirect URI that is not registered', async () =>
    assertErrorPage(await authorize(validParams({ redirect_uri: 'https://evil.example/callback' })), 400, /redirect_uri/));
  test('a registered redirect URI with something appended', async () =>
    assertErrorPage(await authorize(validParams({ redirect_uri: `${redirectUri}/x` })), 400, /redirect_uri/));
  test('a registered https URI on another port', async () =>
    assertErrorPage(await authorize(validParams({ redirect_uri: 'https://agent.example.com:444/callback' })), 400, /redirect_uri/));
  test('redirect_uri twice', async () =>
    assertErrorPage(await authorize(validParams({ redirect_uri: [redirectUri, redirectUri] })), 400, /repeats the redirect_uri/));
  test('no redirect_uri while two are registered', async () =>
    assertErrorPage(await authorize(validParams({ redirect_uri: null }, twoUriClient), two), 400, /redirect_uri is missing/));
  test('a metadata document that cannot be fetched', async () =>
    assertErrorPage(await authorize(validParams({ client_id: 'http://127.0.0.1:9/client.json' })), 400, /could not be verified/));
  test('a metadata document URL without a path', async () =>
    assertErrorPage(await authorize(validParams({ client_id: 'https://agent.example.com' })), 400, /must contain a path/));
});

describe('after: an error redirect with state and iss', () => {
  type Overrides = Record<string, string | string[] | null>;
  const cases: Array<[string, Overrides | (() => Overrides), string]> = [
    ['no response_type', { response_type: null }, 'invalid_request'],
    ['response_type=token', { response_type: 'token' }, 'unsupported_response_type'],
    ['no code_challenge', { code_challenge: null }, 'invalid_request'],
    ['no code_challenge_method (plain by default)', { code_challenge_method: null }, 'invalid_request'],
    ['code_challenge_method=plain', { code_challenge_method: 'plain' }, 'invalid_request'],
    ['a code_challenge of the wrong length', { code_challenge: 'abc' }, 'invalid_request'],
    ['a code_challenge with foreign characters', { code_challenge: `${challenge.slice(0, 42)}=` }, 'invalid_request'],
    ['an unknown resource', { resource: 'https://elsewhere.example/mcp' }, 'invalid_target'],
    ['two resources', () => ({ resource: [`${one.issuer}/kube/mcp`, `${one.issuer}/kube/mcp`] }), 'invalid_target'],
    ['only unknown scopes', { scope: 'openid admin' }, 'invalid_scope'],
    ['a malformed scope', { scope: 'mcp\\"' }, 'invalid_scope'],
    ['scope twice', { scope: ['mcp', 'mcp'] }, 'invalid_request'],
    ['a request object', { request: 'eyJhbGciOiJub25lIn0.e30.' }, 'request_not_supported'],
    ['a request_uri', { request_uri: 'urn:example:req' }, 'request_uri_not_supported'],
    ['prompt=none', { prompt: 'none' }, 'login_required'],
  ];
  for (const [why, overrides, error] of cases) {
    test(`${why} → ${error}`, async () => {
      assertErrorRedirect(await authorize(validParams(typeof overrides === 'function' ? overrides() : overrides)), error);
    });
  }

  test('an over-long state is refused and not echoed', async () => {
    assertErrorRedirect(await authorize(validParams({ state: 'x'.repeat(1025) })), 'invalid_request', { state: null });
  });

  test('no resource while the gateway has two upstreams → invalid_target', async () => {
    const params = validParams({}, twoUriClient);
    assertErrorRedirect(await authorize(params, two), 'invalid_target', { server: two });
  });

  test('a loopback redirect on another port is accepted, and errors go to that port', async () => {
    const res = await authorize(validParams({ redirect_uri: 'http://127.0.0.1:53682/cb', response_type: 'token' }));
    assertErrorRedirect(res, 'unsupported_response_type', { to: 'http://127.0.0.1:53682/cb' });
  });

  test('the IdP down → temporarily_unavailable; discovery is retried once it is back', async () => {
    // A server of its own, so its IdP client has not discovered anything yet.
    const fresh = await startLoginServer({ idp });
    try {
      const id = (await registerClient(fresh.issuer, { redirect_uris: [redirectUri] })).client_id;
      await idp.stop();
      try {
        assertErrorRedirect(await authorize(validParams({}, id), fresh), 'temporarily_unavailable', { server: fresh });
      } finally {
        await idp.start();
      }
      const res = await authorize(validParams({}, id), fresh);
      assert.equal(res.status, 302);
      assert.ok(res.location!.startsWith(`${idp.issuer}/auth?`));
    } finally {
      await fresh.close();
    }
  });
});

describe('a valid request', () => {
  test('parks the request and sends the browser to the IdP with our own state, nonce and PKCE', async () => {
    const res = await authorize(validParams({ scope: 'mcp unknown-scope', resource: `${one.issuer}/kube/mcp` }));
    assert.equal(res.status, 302);
    const location = new URL(res.location!);
    assert.equal(`${location.origin}${location.pathname}`, `${idp.issuer}/auth`);
    assert.equal(location.searchParams.get('client_id'), idp.clientId);
    assert.equal(location.searchParams.get('redirect_uri'), `${one.issuer}/oauth/callback`);
    assert.equal(location.searchParams.get('code_challenge_method'), 'S256');
    assert.notEqual(location.searchParams.get('code_challenge'), challenge, "never the agent's challenge");
    assert.ok(location.searchParams.get('nonce'));
    const ourState = location.searchParams.get('state')!;
    assert.notEqual(ourState, 'agent-state-1');
    const pending = await one.stores.pending.take(ourState);
    assert.equal(pending?.clientId, clientId);
    assert.equal(pending?.redirectUri, redirectUri);
    assert.equal(pending?.codeChallenge, challenge);
    assert.equal(pending?.resource, `${one.issuer}/kube/mcp`);
    assert.deepEqual(pending?.scopes, ['mcp'], 'unknown scopes are dropped');
    assert.equal(pending?.clientState, 'agent-state-1');
  });

  test('without resource, the only upstream; without scope, the default scope', async () => {
    const res = await authorize(validParams({ scope: null }));
    const pending = await one.stores.pending.take(new URL(res.location!).searchParams.get('state')!);
    assert.equal(pending?.resource, `${one.issuer}/kube/mcp`);
    assert.deepEqual(pending?.scopes, ['mcp']);
  });

  test('a resource with a trailing slash names the same upstream', async () => {
    const res = await authorize(validParams({ resource: `${one.issuer}/kube/mcp/` }));
    const pending = await one.stores.pending.take(new URL(res.location!).searchParams.get('state')!);
    assert.equal(pending?.resource, `${one.issuer}/kube/mcp`);
  });

  test('the only registered redirect URI is used when redirect_uri is omitted', async () => {
    const single = (await registerClient(one.issuer, { redirect_uris: ['https://single.example/cb'] })).client_id;
    const res = await authorize(validParams({ redirect_uri: null }, single));
    const pending = await one.stores.pending.take(new URL(res.location!).searchParams.get('state')!);
    assert.equal(pending?.redirectUri, 'https://single.example/cb');
  });

  test('a registration used at least a day later has its idle expiry slid', async () => {
    const id = (await registerClient(one.issuer, { redirect_uris: [redirectUri] })).client_id;
    // Its first use, as the callback records it after a sign-in (register.test.ts drives that one for real).
    await one.stores.clients.put({ ...(await one.stores.clients.get(id))!, lastUsedAt: one.now() }, 90 * 86_400_000);
    one.advance(60 * 86_400_000);
    assert.equal((await authorize(validParams({}, id))).status, 302);
    one.advance(60 * 86_400_000);
    assert.ok(await one.stores.clients.get(id), 'still registered 120 days after registering, 60 after last use');
  });
});

describe('callback', () => {
  let fresh: string;
  before(async () => {
    // Registered now: the clock may have moved past the first client's idle expiry.
    fresh = (await registerClient(one.issuer, { redirect_uris: [redirectUri] })).client_id;
  });

  /** The callback as the browser that started the authorization sends it: with the IdP nonce cookie its answer set. */
  async function callback(query: string, started?: Awaited<ReturnType<typeof authorize>>) {
    const cookie = started?.headers.getSetCookie().map((c) => c.split(';')[0]!).join('; ');
    const res = await fetch(`${one.issuer}/oauth/callback?${query}`, { redirect: 'manual', headers: cookie ? { cookie } : {} });
    return { status: res.status, headers: res.headers, location: res.headers.get('location'), text: await res.text() };
  }

  test('without state, or with an unknown one: an HTML page', async () => {
    assertErrorPage(await callback('code=abc'), 400, /without the state/);
    assertErrorPage(await callback('code=abc&state=unknown'), 403, /not started in this browser/);
    const started = await authorize(validParams({}, fresh));
    const ourState = new URL(started.location!).searchParams.get('state')!;
    assertErrorPage(await callback(`code=abc&state=${ourState}x`, started), 403, /not started in this browser/);
  });

  test('login CSRF: a callback URL opened in a browser that did not start the sign-in is refused, and the sign-in survives', async () => {
    const started = await authorize(validParams({}, fresh));
    const ourState = new URL(started.location!).searchParams.get('state')!;
    const nonceCookie = started.headers.getSetCookie().find((c) => c.startsWith('mcpgate-idp='));
    assert.ok(nonceCookie, 'the authorize answer binds the IdP round trip to this browser');
    assert.match(nonceCookie, /HttpOnly/);
    assert.match(nonceCookie, /Max-Age=600\b/, 'as short-lived as the parked request');
    const query = `error=access_denied&state=${ourState}&iss=${encodeURIComponent(idp.issuer)}`;
    // The victim's browser: no nonce cookie, or another browser's.
    assertErrorPage(await callback(query), 403, /not started in this browser/);
    const other = await authorize(validParams({}, fresh));
    assertErrorPage(await callback(query, other), 403, /not started in this browser/);
    // Neither consumed the parked request: the browser that started it still finishes.
    assertErrorRedirect(await callback(query, started), 'access_denied');
  });

  test('the IdP refused: access_denied back to the client, and the parked request is gone', async () => {
    const res = await authorize(validParams({}, fresh));
    const ourState = new URL(res.location!).searchParams.get('state')!;
    assertErrorRedirect(await callback(`error=access_denied&state=${ourState}&iss=${encodeURIComponent(idp.issuer)}`, res), 'access_denied');
    assertErrorPage(await callback(`error=access_denied&state=${ourState}`, res), 400, /expired or was already completed/);
  });

  test('the IdP reported an outage: temporarily_unavailable', async () => {
    const res = await authorize(validParams({}, fresh));
    const ourState = new URL(res.location!).searchParams.get('state')!;
    assertErrorRedirect(await callback(`error=temporarily_unavailable&state=${ourState}`, res), 'temporarily_unavailable');
  });

  test('a forged code: the IdP refuses the exchange → access_denied, no session', async () => {
    const res = await authorize(validParams({}, fresh));
    const ourState = new URL(res.location!).searchParams.get('state')!;
    assertErrorRedirect(await callback(`code=forged&state=${ourState}&iss=${encodeURIComponent(idp.issuer)}`, res), 'access_denied');
  });

  test('nothing secret reached the log', () => {
    const text = one.logs.text();
    assert.doesNotMatch(text, /agent-state-1/);
    assert.doesNotMatch(text, new RegExp(challenge));
    assert.doesNotMatch(text, new RegExp(idp.clientSecret));
    assert.ok(!one.logs.records().some((r) => r.status === 500), 'never a 500');
  });
});
