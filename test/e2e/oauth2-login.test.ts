/**
 * Login through a company IdP that speaks plain OAuth 2.0 and no OpenID Connect (`idp.kind:
 * oauth2`), end to end with nothing stubbed: the official SDK client is the agent (401 →
 * discovery → DCR → our /oauth/authorize → token), Chromium is the user's browser (the IdP's
 * login form, our consent page), a GitHub-shaped RFC 6749 server is the IdP
 * (test/support/oauth2-idp.ts: no ID token, identity from `GET /user`), and the upstream is an
 * SDK MCP server in mode `idp` that trusts only that IdP: it checks every bearer token by asking
 * the IdP's user-info API, as an MCP server in front of GitHub's API would.
 *
 * Two IdPs: one issuing tokens that never expire (a GitHub OAuth app without expiring user
 * tokens: no `expires_in`, no refresh token), one issuing expiring tokens with rotating refresh
 * tokens (a GitHub App with expiring user tokens).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { decodeJwt } from 'jose';
import type { Browser } from 'playwright-core';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/port.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { closeChromium, connectWithLogin, createBrowserAgent, launchChromium, newBrowserContext, type BrowserAgent } from '../support/browser-agent.ts';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { startOAuth2Idp, type OAuth2Idp } from '../support/oauth2-idp.ts';

/** An MCP server that accepts a bearer token only when the IdP's user-info API does; `whoami` answers the IdP's login. */
interface UserinfoUpstream {
  url: string;
  /** Every Authorization header received. */
  seen: string[];
  /** While true, every request is refused with 401 (an upstream that distrusts a token the IdP still backs). */
  refuseAll: boolean;
  close(): Promise<void>;
}

async function startUserinfoUpstream(idp: OAuth2Idp): Promise<UserinfoUpstream> {
  const state = { seen: [] as string[], refuseAll: false };
  const server: Server = createServer(async (req, res) => {
    const authorization = req.headers.authorization ?? '';
    state.seen.push(authorization);
    const who = state.refuseAll
      ? undefined
      : await fetch(idp.endpoints.userinfoEndpoint, { headers: { authorization, accept: 'application/json', 'user-agent': 'userinfo-upstream' } });
    if (!who || who.status !== 200) {
      res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-type': 'application/json' }).end('{}');
      return;
    }
    const { login } = (await who.json()) as { login: string };
    const mcp = new McpServer({ name: 'userinfo-upstream', version: '1.0.0' });
    mcp.registerTool('whoami', { description: 'The IdP login of the token this request carried' }, async () => ({ content: [{ type: 'text', text: login }] }));
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on('close', () => void mcp.close());
    await mcp.connect(transport);
    await transport.handleRequest(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return Object.assign(state, {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/mcp`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

/** A gateway whose login is federated to `idp` (kind oauth2, userClaim login), with one `idp`-mode upstream. */
async function startOAuth2Gateway(
  idp: OAuth2Idp,
  upstream: UserinfoUpstream,
  options: { storeKey: Buffer; store: Store; refreshMargin?: string; revocation?: boolean },
): Promise<TestGateway> {
  const { storeKey, store, refreshMargin } = options;
  const { authorizationEndpoint, tokenEndpoint, userinfoEndpoint, revocationEndpoint } = idp.endpoints;
  const endpoints = { authorizationEndpoint, tokenEndpoint, userinfoEndpoint, ...(options.revocation && { revocationEndpoint }) };
  const gateway = await startGateway({
    idp: { clientId: idp.clientId, clientSecret: idp.clientSecret, extra: { kind: 'oauth2', ...endpoints, userClaim: 'login', scopes: ['read:user'] } },
    storeKey,
    store,
    server: { logLevel: 'debug' },
    upstreams: [{ name: 'gh', url: upstream.url, auth: refreshMargin ? { mode: 'idp', refreshMargin } : { mode: 'idp' } }],
  });
  idp.redirectUris.add(`${gateway.url.origin}/oauth/callback`);
  return gateway;
}

const userOf = (idp: OAuth2Idp, login: string) => {
  const user = idp.users.find((u) => u.login === login)!;
  return { login: user.login, password: user.password };
};

/** A raw MCP POST with our access token (what an agent sends), for answers the SDK would act on by itself. */
function initialize(url: URL, accessToken: string): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }),
  });
}

let browser: Browser;
let catcher: RecordingServer;

before(async () => {
  catcher = await startRecordingServer();
  browser = await launchChromium();
});
after(async () => {
  await closeChromium(browser);
  await catcher?.close();
});

describe('SDK agent → gateway → plain OAuth 2.0 IdP (tokens that never expire) → idp-mode upstream', () => {
  const storeKey = randomBytes(32);
  const store = createMemoryStore();
  // What the gateway sealed, opened with the same key.
  const stores = createAuthStores({ store, sealer: createSealer({ keys: [{ id: 'k1', key: storeKey }] }) });
  let idp: OAuth2Idp;
  let upstream: UserinfoUpstream;
  let gateway: TestGateway;
  let alice: BrowserAgent;
  let aliceClient: Client;
  const sidOf = (agent: BrowserAgent) => String(decodeJwt(agent.tokens()!.access_token).sid);

  before(async () => {
    idp = await startOAuth2Idp();
    upstream = await startUserinfoUpstream(idp);
    gateway = await startOAuth2Gateway(idp, upstream, { storeKey, store, revocation: true });
  });
  after(async () => {
    await aliceClient?.close();
    await gateway?.close();
    await upstream?.close();
    await idp?.close();
  });

  test('alice: 401, discovery, DCR, authorize, IdP login form, consent, callback, token, tools/call as "alice"', async () => {
    alice = createBrowserAgent({ context: await newBrowserContext(browser), user: userOf(idp, 'alice'), redirectUri: `${catcher.url}/callback` });
    ({ client: aliceClient } = await connectWithLogin(alice, gateway.mcpUrl('gh')));
    assert.deepEqual((await aliceClient.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'alice' }]);
    assert.equal(alice.loginFormsSeen, 1, "the IdP's login form");
    assert.equal(alice.consentPagesSeen, 1, 'our consent page');
    assert.ok(alice.visited.includes(idp.url), `the browser went through the IdP: ${alice.visited.join(' → ')}`);
    assert.equal(decodeJwt(alice.tokens()!.access_token).sub, 'alice', 'our token names the user-info login');
  });

  test("the upstream saw only the IdP's access token, never ours; it never expires, so it is never refreshed", async () => {
    const ours = alice.tokens()!.access_token;
    const kept = await stores.idpTokens.get(sidOf(alice));
    assert.ok(kept, 'the session holds the IdP tokens');
    assert.equal(kept.expiresAt, undefined, 'no expiry');
    assert.equal(kept.refreshToken, undefined);
    assert.equal(kept.idToken, undefined, 'a plain OAuth 2.0 IdP issues no ID token');
    const tokenRequests = idp.tokenRequests.length;
    for (let i = 0; i < 3; i++) assert.deepEqual((await aliceClient.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'alice' }]);
    const headers = new Set(upstream.seen);
    assert.equal(headers.size, 1, 'one IdP token for the whole session');
    const [header] = [...headers];
    assert.match(header!, /^Bearer gho_/);
    assert.ok(!header!.includes(ours));
    assert.equal(header, `Bearer ${kept.accessToken}`);
    assert.equal(idp.userOf(kept.accessToken)?.login, 'alice');
    assert.equal(idp.tokenRequests.length, tokenRequests, 'no refresh and no other token request');
    assert.equal(idp.refreshCount(), 0);
    assert.equal(idp.tokenRequests.filter((r) => r.form.get('grant_type') === 'authorization_code').length, 1);
    assert.ok(idp.tokenRequests.every((r) => r.accept === 'application/json'));
  });

  test('an upstream that refuses a token the IdP still accepts: 502 for that request, the sign-in kept', async () => {
    upstream.refuseAll = true;
    const userinfoChecks = idp.userinfoRequests.length;
    const res = await initialize(gateway.mcpUrl('gh'), alice.tokens()!.access_token);
    assert.equal(res.status, 502);
    assert.ok(idp.userinfoRequests.length > userinfoChecks, "the gateway asked the IdP's user-info API whether the token is still good");
    upstream.refuseAll = false;
    assert.ok(await stores.sessions.get(sidOf(alice)), 'the session survived');
    assert.deepEqual((await aliceClient.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'alice' }]);
  });

  test('the token revoked at the IdP (the user removed the app): the session ends, the agent must sign in again', async () => {
    const token = upstream.seen.at(-1)!.slice('Bearer '.length);
    idp.revokeGrantOf(token);
    const res = await initialize(gateway.mcpUrl('gh'), alice.tokens()!.access_token);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    // The session is gone: our refresh token no longer works either.
    const refreshed = await fetch(new URL('/oauth/token', gateway.url), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: alice.tokens()!.refresh_token!, client_id: String(alice.clientInformation()!.client_id) }).toString(),
    });
    assert.equal(refreshed.status, 400);
    assert.equal(((await refreshed.json()) as { error: string }).error, 'invalid_grant');
    assert.equal(await stores.sessions.get(sidOf(alice)), undefined, 'the session ended');
    assert.equal(await stores.idpTokens.get(sidOf(alice)), undefined, 'its IdP tokens are forgotten');
  });

  test('signing out of mcpgate revokes the IdP token at its revocation endpoint (RFC 7009): it never expires otherwise', async () => {
    const bob = createBrowserAgent({ context: await newBrowserContext(browser), user: userOf(idp, 'bob'), redirectUri: `${catcher.url}/callback` });
    const { client } = await connectWithLogin(bob, gateway.mcpUrl('gh'));
    assert.deepEqual((await client.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'bob' }]);
    await client.close();
    const idpToken = (await stores.idpTokens.get(sidOf(bob)))!.accessToken;
    const res = await fetch(new URL('/oauth/logout', gateway.url), { method: 'POST', headers: { authorization: `Bearer ${bob.tokens()!.access_token}` } });
    assert.ok(res.status < 300, `logout answered ${res.status}`);
    assert.ok(idp.revoked.includes(idpToken), 'the IdP token was revoked at the IdP');
    assert.equal(idp.userOf(idpToken), undefined, 'the IdP no longer accepts it');
  });

  test('the gateway log holds no token, code or secret', () => {
    const text = gateway.logs.text();
    const secrets = [idp.clientSecret, ...idp.users.map((u) => u.password), alice.tokens()!.access_token, alice.tokens()!.refresh_token!, alice.code!, ...upstream.seen.map((h) => h.slice('Bearer '.length))];
    for (const secret of secrets) assert.ok(!text.includes(secret), 'a secret reached the log');
    assert.ok(!gateway.logs.records().some((r) => r.status === 500));
  });
});

describe('SDK agent → gateway → plain OAuth 2.0 IdP (expiring tokens, rotating refresh tokens) → idp-mode upstream', () => {
  let idp: OAuth2Idp;
  let upstream: UserinfoUpstream;
  let gateway: TestGateway;
  let bobClient: Client;

  before(async () => {
    idp = await startOAuth2Idp({ accessTokenTtlSeconds: 60 });
    upstream = await startUserinfoUpstream(idp);
    // A refresh margin as long as the token's lifetime: every request finds the IdP token due, so
    // each one proves a refresh (with rotation) without waiting for a clock.
    gateway = await startOAuth2Gateway(idp, upstream, { storeKey: randomBytes(32), store: createMemoryStore(), refreshMargin: '60s' });
  });
  after(async () => {
    await bobClient?.close();
    await gateway?.close();
    await upstream?.close();
    await idp?.close();
  });

  test('every upstream request carries a freshly refreshed IdP token; rotation never replays a refresh token', async () => {
    const bob = createBrowserAgent({ context: await newBrowserContext(browser), user: userOf(idp, 'bob'), redirectUri: `${catcher.url}/callback` });
    ({ client: bobClient } = await connectWithLogin(bob, gateway.mcpUrl('gh')));
    for (let i = 0; i < 3; i++) assert.deepEqual((await bobClient.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'bob' }]);

    const refreshes = idp.tokenRequests.filter((r) => r.form.get('grant_type') === 'refresh_token');
    assert.ok(refreshes.length >= 3, `one refresh per request at least for the three calls (saw ${refreshes.length})`);
    assert.equal(idp.refreshCount(), refreshes.length, 'every refresh succeeded: none replayed a used refresh token');
    const presented = refreshes.map((r) => r.form.get('refresh_token'));
    assert.equal(new Set(presented).size, presented.length, 'each refresh presented the token the previous one returned');
    const tokens = new Set(upstream.seen);
    assert.ok(tokens.size >= 3, 'the upstream saw the rotated access tokens');
    assert.ok(!gateway.logs.text().includes(String(presented[0])));
  });
});
