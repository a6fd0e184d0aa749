/**
 * A real login whose legs land on different replicas: two gateway replicas on one redis-server
 * behind a balancer (the public URL), the company IdP a real `oidc-provider`, the agent the SDK
 * client whose OAuth runs in Chromium. The balancer sends the authorization request to replica A,
 * the IdP's callback to B, the consent to A and the token request to B; then the upstream connect
 * link the agent is given is started on A and called back on B. Nothing of a login or a connection
 * is kept in one process: every leg finds what the previous one left in the store. The token the
 * agent ends up with works on either replica.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Browser } from 'playwright-core';
import { startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { approveAtUpstream, closeChromium, confirmConnect, connectWithLogin, createBrowserAgent, launchChromium, newBrowserContext } from '../support/browser-agent.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';
import { startBalancer, type Balancer } from './balancer.ts';
import { startFleet, type Fleet } from './races-fixture.ts';

let redis: RedisServer;
let idp: DevIdp;
let upstream: UpstreamWithAs;
let catcher: RecordingServer;
let balancer: Balancer;
let fleet: Fleet;
let browser: Browser;

before(async () => {
  [redis, idp, upstream, catcher, balancer] = await Promise.all([
    startRedis(),
    startDevIdp(),
    startUpstreamWithAs({ registration: 'dcr', openHandshake: true }),
    startRecordingServer(),
    startBalancer(),
  ]);
  fleet = await startFleet({
    valkeyUrl: redis.url,
    idp,
    publicUrl: balancer.url,
    upstreams: [{ name: 'notes', url: upstream.mcpUrl, auth: { mode: 'oauth', scopes: ['notes:read'], challenge: 'tool_result' } }],
  });
  balancer.targets = fleet.bases;
  browser = await launchChromium();
});

after(async () => {
  await closeChromium(browser);
  await fleet?.close();
  await Promise.all([balancer?.close(), catcher?.close(), upstream?.close(), idp?.close()]);
  await redis?.stop();
});

/** Where the balancer sends each leg: A is 0, B is 1. Everything else goes round robin. */
const LEGS: Record<string, number> = {
  'GET /oauth/authorize': 0,
  'GET /oauth/callback': 1,
  'POST /oauth/consent': 0,
  'POST /oauth/token': 1,
  'GET /oauth/upstream/start': 0,
  'POST /oauth/upstream/start': 0,
  'GET /oauth/upstream/callback': 1,
};

/** The replicas that served each of `legs`, as the balancer saw them: `leg → [replica, status]…`. */
function servedLegs(legs: string[]): Record<string, Array<[number, number]>> {
  return Object.fromEntries(legs.map((leg) => [leg, balancer.served.filter((s) => `${s.method} ${s.path}` === leg).map((s): [number, number] => [s.replica, s.status])]));
}

test('login legs on alternate replicas (authorize A, IdP callback B, consent A, token B), a connect link started on A and called back on B: the token works on both', async (t) => {
  balancer.route = (req, path) => LEGS[`${req.method} ${path}`];
  const user = idp.users.find((u) => u.login === 'alice')!;
  const context = await newBrowserContext(browser);
  const agent = createBrowserAgent({ context, user: { login: user.login, password: user.password }, redirectUri: `${catcher.url}/callback` });
  const { client } = await connectWithLogin(agent, new URL(`${balancer.url}/notes/mcp`));
  try {
    assert.equal(agent.loginFormsSeen, 1);
    assert.equal(agent.consentPagesSeen, 1);
    // Each leg ran exactly where the balancer sent it, and answered as a login's legs do.
    assert.deepEqual(servedLegs(['GET /oauth/authorize', 'GET /oauth/callback', 'POST /oauth/consent', 'POST /oauth/token']), {
      'GET /oauth/authorize': [[0, 302]],
      'GET /oauth/callback': [[1, 200]],
      'POST /oauth/consent': [[0, 303]],
      'POST /oauth/token': [[1, 200]],
    });

    const challenged = await client.callTool({ name: 'whoami', arguments: {} });
    const required = challenged.structuredContent as { status: string; auth_url: string };
    assert.equal(required.status, 'auth_required');
    assert.ok(required.auth_url.startsWith(`${balancer.url}/`), required.auth_url);
    const page = await context.newPage();
    await page.goto(required.auth_url);
    // The login cookie set by replica B's callback signs the browser in on replica A.
    await confirmConnect(page, 'alice');
    await page.waitForURL(`${upstream.issuer}/**`);
    await approveAtUpstream(page, 'alice-up');
    await page.waitForURL(`${balancer.url}/oauth/upstream/callback?**`);
    assert.equal(await page.locator('h1').textContent(), 'Connected to notes');
    const connect = servedLegs(['GET /oauth/upstream/start', 'POST /oauth/upstream/start', 'GET /oauth/upstream/callback']);
    assert.deepEqual(connect['GET /oauth/upstream/start'], [[0, 200]], 'the confirmation page came from A');
    assert.equal(connect['POST /oauth/upstream/start']?.[0]?.[0], 0, 'the connection was started on A');
    assert.deepEqual(connect['GET /oauth/upstream/callback'], [[1, 200]], 'and completed on B');
    t.diagnostic(`legs: ${balancer.served.filter((s) => LEGS[`${s.method} ${s.path}`] !== undefined).map((s) => `${s.method} ${s.path} → ${'AB'[s.replica]}`).join(', ')}`);

    // The agent's token, on each replica directly: an SDK client initializes and calls the upstream as alice-up.
    const accessToken = agent.tokens()!.access_token;
    for (const base of fleet.bases) {
      const direct = new Client({ name: 'direct-agent', version: '1.0.0' });
      await direct.connect(new StreamableHTTPClientTransport(new URL(`${base}/notes/mcp`), { requestInit: { headers: { authorization: `Bearer ${accessToken}` } } }));
      try {
        assert.deepEqual((await direct.callTool({ name: 'whoami', arguments: {} })).content, [{ type: 'text', text: 'upstream user alice-up' }], base);
      } finally {
        await direct.close();
      }
    }
  } finally {
    await client.close();
    await context.close();
  }
});
