/**
 * The upstream OAuth flow against a real MCP server whose own authorization server (a real
 * oidc-provider with open dynamic registration) is not ours: connect, single-use state, the
 * same-user rule in both browser legs, expiry, denial, RFC 9207 `iss`, connect/disconnect.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeJwt } from 'jose';
import { authRequiredOf, sessionOf, startHarness, toolText, type Harness, type TestUser } from './harness.ts';
import type { Browser, Page } from './browser.ts';

let h: Harness;
before(async () => {
  h = await startHarness({ registration: 'dcr' });
});
after(async () => {
  await h?.close();
});

const basicAuth = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
const whoami = (user: TestUser) => h.rpc(user, 'tools/call', { name: 'whoami', arguments: {} });

/** Runs the whole dance for a fresh session: challenge, browser, callback. */
async function connected(subject = 'alice', login = `${subject}-up`): Promise<{ user: TestUser; browser: Browser; authUrl: string; page: Page }> {
  const user = sessionOf(subject);
  const authUrl = authRequiredOf(await whoami(user)).auth_url;
  const browser = h.browser(user);
  const page = await h.connect(browser, authUrl, { login });
  assert.equal(page.status, 200, page.body);
  return { user, browser, authUrl, page };
}

/** Stops the browser just before it would load our callback, and returns that URL. */
async function callbackUrlFor(user: TestUser, browser: Browser): Promise<{ authUrl: string; callback: URL }> {
  const authUrl = authRequiredOf(await whoami(user)).auth_url;
  const page = await h.connect(browser, authUrl, { stopAtCallback: true });
  return { authUrl, callback: new URL(String(page.headers.location), page.url) };
}

describe('connecting a user to an upstream with its own authorization server', () => {
  test('auth_required carries only our start URL; after the browser leg the retry reaches the upstream as the upstream user', async () => {
    const user = sessionOf('alice');
    const first = await whoami(user);
    const required = authRequiredOf(first);
    const authUrl = new URL(required.auth_url);
    assert.equal(authUrl.origin + authUrl.pathname, `${h.publicUrl}/oauth/upstream/start`);
    assert.deepEqual([...authUrl.searchParams.keys()], ['flow'], 'no credential, state or personal data in the URL');
    assert.equal(required.server_name, 'notes');
    assert.ok(!required.auth_url.includes('alice'));

    const browser = h.browser(user);
    const page = await h.connect(browser, required.auth_url);
    assert.equal(page.status, 200);
    assert.match(page.body, /<title>Connected to notes<\/title>/);
    assert.match(page.body, /Return to your agent and retry/);
    assert.equal(page.headers['x-frame-options'], 'DENY');
    assert.match(String(page.headers['content-security-policy']), /frame-ancestors 'none'/);
    assert.equal(page.headers['cache-control'], 'no-store');

    // The browser went: our start URL → their authorization endpoint with PKCE S256 and RFC 8707 resource → back to our callback.
    const toAs = new URL(browser.visited.find((u) => u.startsWith(`${h.upstream.issuer}/auth?`))!);
    assert.equal(toAs.searchParams.get('response_type'), 'code');
    assert.equal(toAs.searchParams.get('code_challenge_method'), 'S256');
    assert.match(toAs.searchParams.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.equal(toAs.searchParams.get('resource'), h.upstream.mcpUrl);
    assert.equal(toAs.searchParams.get('redirect_uri'), `${h.publicUrl}/oauth/upstream/callback`);
    assert.notEqual(toAs.searchParams.get('state'), authUrl.searchParams.get('flow'), 'the state is not the id the agent saw');

    const event = h.connected.at(-1)!;
    assert.equal(event.sessionId, user.sessionId);
    assert.equal(event.upstream, 'notes');
    assert.match(event.elicitationId, /^[0-9a-f-]{36}$/);

    assert.equal(toolText(await whoami(user)), 'upstream user alice-up');
    assert.ok(h.upstream.registrations() >= 1, 'registered by RFC 7591');
  });

  test('tokens, verifiers and secrets are sealed at rest', async () => {
    const { user } = await connected();
    const token = await h.flows.token(user.sessionId, 'notes');
    assert.ok(token?.accessToken && token.refreshToken);
    const raw = await h.store.get(`utoken:{${user.sessionId}}:notes`);
    assert.ok(raw?.startsWith('v1.'));
    assert.ok(!raw!.includes(token.accessToken) && !raw!.includes(token.refreshToken) && !raw!.includes('alice'));
  });

  test('concurrent requests of one session share one pending flow, across replicas too', async () => {
    const user = sessionOf('bob');
    const answers = await Promise.all(Array.from({ length: 6 }, () => whoami(user)));
    const urls = new Set(answers.map((a) => authRequiredOf(a).auth_url));
    assert.equal(urls.size, 1);
    const replica = await h.replicaFlows().startFlow({ principal: user, upstream: { name: 'notes', url: h.upstream.mcpUrl, scopes: [] } });
    assert.equal(replica.authUrl, [...urls][0]);
    // Another session of the same user gets a flow of its own.
    assert.notEqual(authRequiredOf(await whoami(sessionOf('bob'))).auth_url, replica.authUrl);
  });

  test("another user opening the link is refused, and the owner's flow survives", async () => {
    const alice = sessionOf('alice');
    const authUrl = authRequiredOf(await whoami(alice)).auth_url;
    const stolen = await h.browser(sessionOf('bob')).open(authUrl);
    assert.equal(stolen.status, 403);
    assert.match(stolen.body, /This link is for another user/);
    assert.ok(!stolen.body.includes('alice'), 'the page does not say whose link it is');

    const anonymous = await h.browser().open(authUrl);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.body, /Sign in to mcpgate first/);

    const page = await h.connect(h.browser(alice), authUrl);
    assert.equal(page.status, 200);
    assert.equal(toolText(await whoami(alice)), 'upstream user alice-up');
  });

  test("a callback brought to another user's browser is refused without spending the state", async () => {
    const alice = sessionOf('alice');
    const { callback } = await callbackUrlFor(alice, h.browser(alice));
    const lured = await h.browser(sessionOf('mallory')).open(callback.href);
    assert.equal(lured.status, 403);
    assert.equal((await h.browser().open(callback.href)).status, 401);
    assert.equal(await h.flows.token(alice.sessionId, 'notes'), undefined);

    const own = await h.browser(alice).open(callback.href);
    assert.equal(own.status, 200, own.body);
  });

  test('a replayed callback is refused', async () => {
    const alice = sessionOf('alice');
    const browser = h.browser(alice);
    const { callback } = await callbackUrlFor(alice, browser);
    assert.equal((await browser.open(callback.href)).status, 200);
    const replay = await browser.open(callback.href);
    assert.equal(replay.status, 400);
    assert.match(replay.body, /expired or was already used/);
  });

  test('a flow expires after 10 minutes', async () => {
    const alice = sessionOf('alice');
    const authUrl = authRequiredOf(await whoami(alice)).auth_url;
    h.advance(10 * 60_000 + 1000);
    const page = await h.browser(alice).open(authUrl);
    assert.equal(page.status, 400);
    assert.match(page.body, /This link has expired/);
    const next = authRequiredOf(await whoami(alice)).auth_url;
    assert.notEqual(next, authUrl, 'the next call starts a new flow');
  });

  test('denied consent shows an error page, and the next call challenges again', async () => {
    const alice = sessionOf('alice');
    const authUrl = authRequiredOf(await whoami(alice)).auth_url;
    const page = await h.connect(h.browser(alice), authUrl, { decision: 'deny' });
    assert.equal(page.status, 403);
    assert.match(page.body, /Access not granted/);
    assert.equal(await h.flows.token(alice.sessionId, 'notes'), undefined);
    const again = authRequiredOf(await whoami(alice));
    assert.notEqual(again.auth_url, authUrl);
  });

  test('RFC 9207: a response with another iss, or without the iss the server promises, is refused', async () => {
    const meta = await (await fetch(`${h.upstream.issuer}/.well-known/openid-configuration`)).json() as Record<string, unknown>;
    assert.equal(meta['authorization_response_iss_parameter_supported'], true);

    const alice = sessionOf('alice');
    const browser = h.browser(alice);
    const { callback } = await callbackUrlFor(alice, browser);
    const forged = new URL(callback);
    forged.searchParams.set('iss', 'https://attacker.example');
    const mixUp = await browser.open(forged.href);
    assert.equal(mixUp.status, 400);
    assert.match(mixUp.body, /different authorization server/);
    // The state is spent: the genuine response cannot be used afterwards either.
    assert.equal((await browser.open(callback.href)).status, 400);

    const second = await callbackUrlFor(alice, browser);
    const stripped = new URL(second.callback);
    stripped.searchParams.delete('iss');
    const missing = await browser.open(stripped.href);
    assert.equal(missing.status, 400);
    assert.match(missing.body, /promises an &quot;iss&quot; parameter/);
    assert.equal(await h.flows.token(alice.sessionId, 'notes'), undefined);
  });

  test('GET /connect/{name} connects from the browser without waiting for a 401', async () => {
    const alice = sessionOf('alice');
    const page = await h.connect(h.browser(alice), `${h.publicUrl}/connect/notes`);
    assert.equal(page.status, 200, page.body);
    assert.equal(toolText(await whoami(alice)), 'upstream user alice-up');
    assert.equal((await h.browser(alice).open(`${h.publicUrl}/connect/nope`)).status, 404);
    assert.equal((await h.browser().open(`${h.publicUrl}/connect/notes`)).status, 401);
  });

  test('disconnect revokes at the upstream (which records it), /connections follows, and the next call challenges again', async () => {
    const { user } = await connected();
    const token = (await h.flows.token(user.sessionId, 'notes'))!;
    const listed = await h.request('/connections', { user });
    assert.equal(listed.status, 200);
    assert.deepEqual(JSON.parse(listed.body).connections.map((c: { upstream: string; connected: boolean }) => [c.upstream, c.connected]), [['notes', true]]);

    const deleted = await h.request('/connections/notes', { method: 'DELETE', user });
    assert.equal(deleted.status, 200);
    assert.deepEqual(JSON.parse(deleted.body), { upstream: 'notes', disconnected: true, revoked: true });
    // RFC 7009 §2.1: the refresh token, which ends the grant (its JWT access tokens cannot be revoked one by one).
    const revoked = h.upstream.revocations.find((r) => r.tokenSha256 === h.upstream.digest(token.refreshToken!));
    assert.equal(revoked?.tokenTypeHint, 'refresh_token');
    const refreshAttempt = await fetch(`${h.upstream.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(token.client.clientId, token.client.clientSecret!) },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: token.refreshToken! }).toString(),
    });
    assert.equal(refreshAttempt.status, 400, 'the upstream really revoked the grant');

    const after = await h.request('/connections', { user });
    assert.equal(JSON.parse(after.body).connections[0].connected, false);
    authRequiredOf(await whoami(user));
    assert.equal((await h.request('/connections', {})).status, 401);
    assert.equal((await h.request('/connections/unknown', { method: 'DELETE', user })).status, 404);
  });

  test('a flow started with returnTo (our /oauth/authorize chaining) sends the browser back there, connected or not; nothing but our paths is accepted', async () => {
    const alice = sessionOf('alice');
    const upstream = { name: 'notes', url: h.upstream.mcpUrl, scopes: [] };
    const plain = authRequiredOf(await whoami(alice)).auth_url;
    const required = await h.flows.startFlow({ principal: alice, upstream, returnTo: '/oauth/authorize/resume?request=abc' });
    assert.notEqual(required.authUrl, plain, 'a pending flow that ends elsewhere is not shared');
    const browser = h.browser(alice);
    const page = await h.connect(browser, required.authUrl, { stopAtCallback: true });
    const done = await browser.open(new URL(String(page.headers.location), page.url).href, { stopAt: (url) => url.pathname === '/oauth/authorize/resume' });
    assert.equal(done.status, 303);
    assert.equal(done.headers.location, '/oauth/authorize/resume?request=abc');
    assert.ok(await h.flows.token(alice.sessionId, 'notes'));

    // A denial goes back there too: the chained authorization decides what to do without the connection.
    const bob = sessionOf('bob');
    const denied = await h.flows.startFlow({ principal: bob, upstream, returnTo: '/oauth/authorize/resume?request=def' });
    const bobBrowser = h.browser(bob);
    const back = await h.connect(bobBrowser, denied.authUrl, { decision: 'deny', stopAtCallback: true });
    const afterDenial = await bobBrowser.open(new URL(String(back.headers.location), back.url).href, { stopAt: (url) => url.pathname === '/oauth/authorize/resume' });
    assert.equal(afterDenial.status, 303);
    assert.equal(afterDenial.headers.location, '/oauth/authorize/resume?request=def');
    assert.equal(await h.flows.token(bob.sessionId, 'notes'), undefined);

    for (const returnTo of ['//evil.example/x', 'https://evil.example/', '/\\evil.example', 'relative']) {
      await assert.rejects(h.flows.startFlow({ principal: alice, upstream, returnTo }), /returnTo must be a path/);
    }
  });

  test('our Client ID Metadata Document is served at a stable URL', async () => {
    const res = await h.request('/oauth/client-metadata.json');
    assert.equal(res.status, 200);
    const doc = JSON.parse(res.body);
    assert.equal(doc.client_id, `${h.publicUrl}/oauth/client-metadata.json`);
    assert.deepEqual(doc.redirect_uris, [`${h.publicUrl}/oauth/upstream/callback`]);
    assert.equal(doc.token_endpoint_auth_method, 'none');
    assert.equal(doc.client_name, 'mcpgate');
  });

  test('the browser legs are rate limited per client address, and a malformed flow id costs no lookup', async () => {
    const limited = await startHarness({ registration: 'dcr', rateLimit: 3 });
    try {
      const browser = limited.browser(sessionOf('alice'));
      for (let i = 0; i < 3; i++) assert.equal((await browser.open(`${limited.publicUrl}/oauth/upstream/start?flow=${'x'.repeat(i)}`)).status, 400);
      const refused = await browser.open(`${limited.publicUrl}/oauth/upstream/start?flow=abc`);
      assert.equal(refused.status, 429);
      assert.ok(Number(refused.headers['retry-after']) >= 1);
    } finally {
      await limited.close();
    }
  });

  test('the upstream only ever saw tokens of its own authorization server, for itself', () => {
    assert.ok(h.upstream.seenAuthorization.length >= 3, String(h.upstream.seenAuthorization.length));
    for (const header of h.upstream.seenAuthorization) {
      if (header === undefined) continue;
      assert.ok(!header.includes('gw-test'), 'our token never reaches the upstream');
      const claims = decodeJwt(header.replace(/^Bearer /, ''));
      assert.equal(claims.iss, h.upstream.issuer);
      assert.equal(claims.aud, h.upstream.mcpUrl);
    }
  });
});
