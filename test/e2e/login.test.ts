/**
 * The whole login, end to end, with nothing stubbed: the official SDK client is the agent (its
 * own OAuth: 401 → RFC 9728/8414 discovery → DCR → authorize → token), Chromium is the user's
 * browser (our consent page, the development IdP's login form), `oidc-provider` is the company
 * IdP, and the upstream is an SDK MCP server that trusts only the IdP: it verifies the IdP's JWT
 * access tokens itself and records every Authorization header it saw.
 *
 * What it proves: the agent gets our tokens and the upstream gets the IdP's, never ours; two users
 * never see each other's upstream tokens; a token for one upstream is refused at another.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import type { Browser } from 'playwright-core';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { closeChromium, connectWithLogin, createBrowserAgent, launchChromium, newBrowserContext, type BrowserAgent } from '../support/browser-agent.ts';
import { startGateway } from '../support/gateway.ts';
import type { App } from '../../src/app.ts';
import type { LogCapture } from '../support/logs.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';

/** An MCP server that trusts only the IdP, with a `whoami` tool answering the verified token's subject. */
interface JwtUpstream {
  url: string;
  /** Every Authorization header received, verified or not. */
  seen: string[];
  close(): Promise<void>;
}

async function startJwtUpstream(idp: DevIdp): Promise<JwtUpstream> {
  const jwks = createRemoteJWKSet(new URL(idp.jwksUri));
  const seen: string[] = [];
  const server: Server = createServer(async (req, res) => {
    const authorization = req.headers.authorization ?? '';
    seen.push(authorization);
    let subject: string;
    try {
      const { payload } = await jwtVerify(authorization.replace(/^Bearer /, ''), jwks, { issuer: idp.issuer, audience: idp.audience });
      subject = String(payload.sub);
    } catch {
      res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-type': 'application/json' }).end('{}');
      return;
    }
    // Stateless: one server per request, its tool bound to the caller the IdP token names.
    const mcp = new McpServer({ name: 'idp-only-upstream', version: '1.0.0' });
    mcp.registerTool('whoami', { description: 'The subject of the IdP token this request carried' }, async () => ({
      content: [{ type: 'text', text: subject }],
    }));
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on('close', () => void mcp.close());
    await mcp.connect(transport);
    await transport.handleRequest(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/mcp`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

let idp: DevIdp;
let kube: JwtUpstream;
let search: JwtUpstream;
let app: App;
let gateway: string;
let logs: LogCapture;
let browser: Browser;
let catcher: RecordingServer;
const storeKey = randomBytes(32);
const store = createMemoryStore();
const stores = createAuthStores({ store, sealer: createSealer({ keys: [{ id: 'k1', key: storeKey }] }) });

before(async () => {
  idp = await startDevIdp({ accessTokenTtlSeconds: 300 });
  kube = await startJwtUpstream(idp);
  search = await startJwtUpstream(idp);
  catcher = await startRecordingServer();
  const started = await startGateway({
    idp,
    storeKey,
    store,
    server: { logLevel: 'debug' },
    upstreams: [
      { name: 'kube', url: kube.url, auth: { mode: 'idp' } },
      { name: 'search', url: search.url, auth: { mode: 'idp' } },
    ],
  });
  ({ app, logs } = started);
  gateway = started.url.origin;
  browser = await launchChromium();
});
after(async () => {
  await closeChromium(browser);
  await app?.close();
  await kube?.close();
  await search?.close();
  await catcher?.close();
  await idp?.close();
});

const userOf = (login: string) => {
  const user = idp.users.find((u) => u.login === login)!;
  return { login: user.login, password: user.password };
};

describe('SDK agent → gateway → IdP login → upstream that trusts only the IdP', () => {
  let alice: BrowserAgent;
  let bob: BrowserAgent;
  let aliceClient: Client;
  let bobClient: Client;

  test('alice: 401, discovery, DCR, authorize, consent, IdP login, callback, token, initialize, tools/call', async () => {
    alice = createBrowserAgent({ context: await newBrowserContext(browser), user: userOf('alice'), redirectUri: `${catcher.url}/callback` });
    ({ client: aliceClient } = await connectWithLogin(alice, new URL(`${gateway}/kube/mcp`)));
    const result = await aliceClient.callTool({ name: 'whoami', arguments: {} });
    assert.deepEqual(result.content, [{ type: 'text', text: 'alice' }]);

    const steps = alice.requests;
    const index = (pattern: RegExp) => steps.findIndex((s) => pattern.test(s));
    const order = [
      /^POST \/kube\/mcp 401$/,
      /^GET \/\.well-known\/oauth-protected-resource\/kube\/mcp 200$/,
      /^GET \/\.well-known\/(oauth-authorization-server|openid-configuration) 200$/,
      /^POST \/oauth\/register 201$/,
      /^POST \/oauth\/token 200$/,
      /^POST \/kube\/mcp 200$/,
    ].map(index);
    assert.ok(order.every((i) => i >= 0), steps.join('\n'));
    assert.deepEqual([...order].sort((a, b) => a - b), order, steps.join('\n'));
    assert.equal(alice.consentPagesSeen, 1);
  });

  test("the upstream saw the IdP's access token for alice's session, never ours", async () => {
    const ours = alice.tokens()!.access_token;
    const claims = decodeJwt(ours);
    assert.equal(claims.iss, gateway);
    assert.equal(claims.aud, `${gateway}/kube/mcp`);
    const idpTokens = await stores.idpTokens.get(String(claims.sid));
    assert.ok(idpTokens, 'the session holds the IdP tokens');
    assert.ok(kube.seen.length >= 2, 'initialize, initialized and tools/call reached the upstream');
    for (const header of kube.seen) {
      assert.equal(header, `Bearer ${idpTokens.accessToken}`);
      assert.ok(!header.includes(ours));
      const seen = decodeJwt(header.slice('Bearer '.length));
      assert.equal(seen.iss, idp.issuer);
      assert.equal(seen.sub, 'alice');
    }
  });

  test("bob logs in with his own account and never sees alice's upstream token", async () => {
    bob = createBrowserAgent({ context: await newBrowserContext(browser), user: userOf('bob'), redirectUri: `${catcher.url}/callback` });
    const before = kube.seen.length;
    ({ client: bobClient } = await connectWithLogin(bob, new URL(`${gateway}/kube/mcp`)));
    assert.deepEqual((await bobClient.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'bob' }]);
    assert.deepEqual((await aliceClient.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'alice' }]);
    assert.deepEqual((await bobClient.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'bob' }]);

    const aliceIdp = (await stores.idpTokens.get(String(decodeJwt(alice.tokens()!.access_token).sid)))!.accessToken;
    const bobIdp = (await stores.idpTokens.get(String(decodeJwt(bob.tokens()!.access_token).sid)))!.accessToken;
    assert.notEqual(aliceIdp, bobIdp);
    const bySubject = new Map<string, Set<string>>();
    for (const header of kube.seen.slice(before)) {
      const sub = String(decodeJwt(header.slice('Bearer '.length)).sub);
      bySubject.set(sub, (bySubject.get(sub) ?? new Set()).add(header));
    }
    assert.deepEqual([...bySubject.get('alice')!], [`Bearer ${aliceIdp}`]);
    assert.deepEqual([...bySubject.get('bob')!], [`Bearer ${bobIdp}`]);
    assert.equal(bob.consentPagesSeen, 1, "alice's approval does not count for bob");
  });

  test('a token for the kube upstream is refused at the search upstream, which sees nothing', async () => {
    const res = await fetch(`${gateway}/search/mcp`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${alice.tokens()!.access_token}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }),
    });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    assert.match(res.headers.get('www-authenticate') ?? '', /resource_metadata="[^"]*\/\.well-known\/oauth-protected-resource\/search\/mcp"/);
    assert.deepEqual(search.seen, []);
  });

  test('the gateway log holds no token, code or secret', async () => {
    await aliceClient.close();
    await bobClient.close();
    const text = logs.text();
    const secrets = [
      idp.clientSecret,
      ...idp.users.map((u) => u.password),
      alice.tokens()!.access_token,
      alice.tokens()!.refresh_token!,
      bob.tokens()!.access_token,
      alice.code!,
      bob.code!,
      ...kube.seen.map((h) => h.slice('Bearer '.length)),
    ];
    for (const secret of secrets) assert.ok(!text.includes(secret), 'a secret reached the log');
    assert.ok(!logs.records().some((r) => r.status === 500));
  });
});
