/**
 * Two replicas on one Valkey, no session affinity (issue 9): what an agent declared on one
 * replica drives the auth_required channel on the other; an upstream connection completed on one
 * replica reaches the agent's stream held by the other; the registration rate limit counts for
 * the fleet; and a replica that shuts down mid-stream hands its agents to the other without a
 * 5xx, the stream ending at an event boundary and resuming with Last-Event-ID.
 *
 * Real peers: two `createApp` replicas, a real `redis-server`, the SDK client as the agent, a real
 * MCP server behind its own real authorization server (oidc-provider), and the demo MCP server
 * with its event store (resumable streams).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitationCompleteNotificationSchema, ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import { startDemoMcpServer, type DemoMcpServer } from '../../demo/mcp-server.ts';
import { login, registerClient, type AuthGateway } from '../authserver/fixture.ts';
import { waitFor } from '../support/mcp-upstream.ts';
import { metricValue, scrapeMetrics } from '../support/metrics.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';
import { confirmConnect, createBrowser, formAction, isConnectConfirmation, type Browser } from '../upstream-oauth/browser.ts';
import { startFleet, type Fleet } from './fixture.ts';

let upstream: UpstreamWithAs;
let demo: DemoMcpServer;
let fleet: Fleet;

before(async () => {
  upstream = await startUpstreamWithAs({ registration: 'dcr', openHandshake: true, users: ['alice-up'] });
  demo = await startDemoMcpServer({ retryIntervalMs: 50 });
  fleet = await startFleet({
    replicas: 2,
    upstreams: [
      { name: 'notes', url: upstream.mcpUrl, auth: { mode: 'oauth', scopes: ['notes:read'] } },
      { name: 'demo', url: demo.url.href },
    ],
  });
});

after(async () => {
  await fleet?.close();
  await demo?.close();
  await upstream?.close();
});

/** One HTTP exchange of the agent: which replica answered, and (for SSE) what it sent. */
interface Exchange {
  replica: number;
  method: string;
  rpc: string | undefined;
  status: number;
  lastEventId: string | undefined;
  /** The SSE body as received so far; `ended` once the stream ended (cleanly or not). */
  body: string;
  ended: boolean;
}

/** The agent's fetch: `route` picks the replica of each request (the balancer). */
function balancedFetch(route: (method: string, rpc: string | undefined) => number, exchanges: Exchange[]) {
  return async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const method = (init.method ?? 'GET').toUpperCase();
    const rpc = typeof init.body === 'string' ? (JSON.parse(init.body) as { method?: string }).method : undefined;
    const replica = route(method, rpc);
    const response = await fetch(fleet.on(replica, String(input instanceof Request ? input.url : input)), init);
    const exchange: Exchange = { replica, method, rpc, status: response.status, lastEventId: new Headers(init.headers).get('last-event-id') ?? undefined, body: '', ended: false };
    exchanges.push(exchange);
    if (!response.body || !(response.headers.get('content-type') ?? '').startsWith('text/event-stream')) return response;
    const decoder = new TextDecoder();
    const recorded = response.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          exchange.body += decoder.decode(chunk, { stream: true });
          controller.enqueue(chunk);
        },
        flush: () => void (exchange.ended = true),
      }),
    );
    return new Response(recorded, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

async function signIn(subject: string, upstreamName: string): Promise<{ accessToken: string; sessionId: string }> {
  const gateway = fleet.gateway as AuthGateway;
  const client = await registerClient(gateway);
  return login(gateway, client, { resource: gateway.resource(upstreamName), subject });
}

function agent(options: { upstream: string; accessToken: string; capabilities: Record<string, unknown>; route: (method: string, rpc: string | undefined) => number }) {
  const exchanges: Exchange[] = [];
  const client = new Client({ name: 'fleet-agent', version: '1.0.0' }, { capabilities: options.capabilities });
  const transport = new StreamableHTTPClientTransport(new URL(`${fleet.publicUrl}/${options.upstream}/mcp`), {
    fetch: balancedFetch(options.route, exchanges),
    requestInit: { headers: { authorization: `Bearer ${options.accessToken}` } },
    reconnectionOptions: { initialReconnectionDelay: 50, maxReconnectionDelay: 500, reconnectionDelayGrowFactor: 1.5, maxRetries: 10 },
  });
  return { client, transport, exchanges };
}

/** The user's trip through the upstream's own authorization server: login there, approve. */
async function authorizeAtUpstream(browser: Browser, url: string, upstreamUser: string) {
  let page = await browser.open(url);
  // mcpgate asks which account to connect first (a click on its confirmation page).
  if (isConnectConfirmation(page)) page = await confirmConnect(browser, page);
  for (let step = 0; step < 4 && page.url.startsWith(upstream.issuer) && page.status === 200; step++) {
    page = /\/login"/.test(page.body)
      ? await browser.submit(formAction(page, /\/login$/), { login: upstreamUser })
      : await browser.submit(formAction(page, /\/approve$/), {});
  }
  return page;
}

describe('two replicas, one Valkey, no affinity', () => {
  test('initialize on A declares URL elicitation: a tools/call on B gets -32042; the connection completed on B reaches the stream held by A within a second', async (t) => {
    const alice = await signIn('alice', 'notes');
    // initialize and the GET stream go to replica A (0), everything else to replica B (1).
    const { client, transport, exchanges } = agent({
      upstream: 'notes',
      accessToken: alice.accessToken,
      capabilities: { elicitation: { url: {} } },
      route: (method, rpc) => (method === 'GET' || rpc === 'initialize' ? 0 : 1),
    });
    const completed: Array<{ id: string; at: number }> = [];
    client.setNotificationHandler(ElicitationCompleteNotificationSchema, (n) => void completed.push({ id: n.params.elicitationId, at: Date.now() }));
    await client.connect(transport);
    try {
      await waitFor(() => exchanges.some((e) => e.method === 'GET' && e.replica === 0 && e.status === 200), 'the GET stream held by replica A');

      const error = await client.callTool({ name: 'whoami', arguments: {} }).then(
        () => assert.fail('expected URL elicitation'),
        (e: unknown) => e,
      );
      assert.deepEqual(
        exchanges.filter((e) => e.rpc !== undefined).map((e) => [e.rpc, e.replica]),
        [['initialize', 0], ['notifications/initialized', 1], ['tools/call', 1]],
      );
      assert.ok(error instanceof McpError, String(error));
      assert.equal(error.code, ErrorCode.UrlElicitationRequired, 'the channel the agent declared on the other replica');
      const [elicitation] = (error.data as { elicitations: Array<{ url: string; elicitationId: string }> }).elicitations;

      // The user's browser reaches replica B for the whole connect leg (start and callback).
      const browser = createBrowser({ hosts: { [fleet.publicUrl]: fleet.replicas[1]!.url } });
      browser.setCookie(fleet.publicUrl, ...fleet.loginCookie('alice', alice.sessionId));
      const page = await authorizeAtUpstream(browser, elicitation!.url, 'alice-up');
      const connectedAt = Date.now();
      assert.equal(page.status, 200, page.body);
      assert.match(page.body, /Connected to notes/);
      const callbackOn = (replica: number) => fleet.replicas[replica]!.logs.text().includes('"path":"/oauth/upstream/callback"');
      assert.ok(callbackOn(1) && !callbackOn(0), 'the callback ran on replica B');

      await waitFor(() => completed.some((c) => c.id === elicitation!.elicitationId), 'notifications/elicitation/complete on the stream held by A', 1000);
      const latency = completed.find((c) => c.id === elicitation!.elicitationId)!.at - connectedAt;
      assert.ok(latency < 1000, `delivered ${latency} ms after the callback answered`);
      t.diagnostic(`elicitation/complete reached replica A's stream ${latency} ms after replica B's callback answered`);

      const result = await client.callTool({ name: 'whoami', arguments: {} });
      assert.deepEqual(result.content, [{ type: 'text', text: 'upstream user alice-up' }]);

      // Counted once for the fleet, by the replica that published it, after its confirmation window.
      let delivered = 0;
      for (let i = 0; i < 50 && delivered !== 1; i++) {
        delivered = metricValue(await scrapeMetrics(fleet.replicas[1]!.url), 'mcpgate_elicitation_notifications_total', { outcome: 'delivered' });
        if (delivered !== 1) await sleep(100);
      }
      assert.equal(delivered, 1);
      assert.equal(metricValue(await scrapeMetrics(fleet.replicas[0]!.url), 'mcpgate_elicitation_notifications_total', { outcome: 'delivered' }), 0, 'counted once, not per replica');
    } finally {
      await client.close();
    }
  });

  test('a connection completed when the agent holds no stream anywhere is counted as no_stream', async () => {
    const bob = await signIn('bob', 'notes');
    const { client, transport } = agent({ upstream: 'notes', accessToken: bob.accessToken, capabilities: { elicitation: { url: {} } }, route: () => 1 });
    await client.connect(transport);
    const before = metricValue(await scrapeMetrics(fleet.replicas[0]!.url), 'mcpgate_elicitation_notifications_total', { outcome: 'no_stream' });
    try {
      const error = (await client.callTool({ name: 'whoami', arguments: {} }).catch((e: unknown) => e)) as McpError;
      assert.equal(error.code, ErrorCode.UrlElicitationRequired);
      const [elicitation] = (error.data as { elicitations: Array<{ url: string }> }).elicitations;
      // The agent lets go of its streams before the user finishes.
      await client.close();
      const browser = createBrowser({ hosts: { [fleet.publicUrl]: fleet.replicas[0]!.url } });
      browser.setCookie(fleet.publicUrl, ...fleet.loginCookie('bob', bob.sessionId));
      assert.equal((await authorizeAtUpstream(browser, elicitation!.url, 'alice-up')).status, 200);
      let after = before;
      for (let i = 0; i < 50 && after === before; i++) {
        await sleep(100);
        after = metricValue(await scrapeMetrics(fleet.replicas[0]!.url), 'mcpgate_elicitation_notifications_total', { outcome: 'no_stream' });
      }
      assert.equal(after - before, 1);
    } finally {
      await client.close();
    }
  });

  test('the registration limit (30 a minute per client address) counts for the fleet: the 31st, on either replica, is refused with Retry-After', async () => {
    // A fixed window: start early in one so all 31 requests fall in it.
    const intoWindow = Date.now() % 60_000;
    if (intoWindow > 45_000) await sleep(60_000 - intoWindow + 200);
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 31; i++) {
      const res = await fetch(fleet.on(i % 2, `${fleet.publicUrl}/oauth/register`), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ client_name: `fleet ${i}`, redirect_uris: ['http://127.0.0.1:33418/callback'], token_endpoint_auth_method: 'none' }),
      });
      statuses.push(res.status);
      if (res.status === 429) retryAfter = res.headers.get('retry-after');
      await res.arrayBuffer();
    }
    assert.deepEqual(statuses.slice(0, 30), Array<number>(30).fill(201), 'every replica admitted its share');
    assert.equal(statuses[30], 429, 'the 31st in the minute is refused, although each replica saw only 15 or 16');
    assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 60, `Retry-After: ${retryAfter}`);
  });

  test('replica A shuts down mid-stream: no 5xx, its streams end at an event boundary, the agent resumes on B with Last-Event-ID', async (t) => {
    const carol = await signIn('carol', 'demo');
    const replicaA = fleet.replicas[0]!;
    // The balancer sends everything to A until A starts draining (with preStop, the ingress has dropped it by then).
    const { client, transport, exchanges } = agent({ upstream: 'demo', accessToken: carol.accessToken, capabilities: {}, route: () => (replicaA.closed ? 1 : 0) });
    const errors: string[] = [];
    await client.connect(transport);
    transport.onerror = (error) => void errors.push(error.message);
    try {
      await waitFor(() => exchanges.some((e) => e.method === 'GET' && e.replica === 0 && e.status === 200), 'the standalone GET stream on A');
      const progress: number[] = [];
      let stopped: Promise<void> | undefined;
      let stoppedIn = 0;
      const call = client.callTool({ name: 'slow_count', arguments: { to: 30, intervalMs: 100 } }, undefined, {
        timeout: 20_000,
        onprogress: (p) => {
          progress.push(p.progress);
          if (p.progress === 3 && !stopped) {
            const started = Date.now();
            stopped = replicaA.close().then(() => void (stoppedIn = Date.now() - started));
          }
        },
      });
      const result = await call;
      await stopped;

      assert.deepEqual((result as { content: Array<{ text: string }> }).content, [{ type: 'text', text: 'counted to 30' }]);
      assert.deepEqual(progress, Array.from({ length: 30 }, (_, i) => i + 1), 'nothing lost, nothing repeated');
      assert.ok(stoppedIn > 0 && stoppedIn < 2000 + 1000, `replica A stopped within drainTimeout (took ${stoppedIn} ms)`);
      t.diagnostic(`replica A stopped ${stoppedIn} ms after close() (drainTimeout 2000 ms)`);

      const call0 = exchanges.find((e) => e.rpc === 'tools/call')!;
      assert.equal(call0.replica, 0);
      assert.ok(call0.ended, 'the call stream on A ended');
      assert.ok(call0.body.endsWith('\n\n'), `the call stream ended after a whole event: …${JSON.stringify(call0.body.slice(-80))}`);
      assert.ok(!call0.body.includes('counted to 30'), 'A ended the stream before the result: it came through the resumed stream');
      const resumed = exchanges.filter((e) => e.method === 'GET' && e.lastEventId !== undefined && e.replica === 1);
      assert.ok(resumed.length >= 1, 'the agent resumed on B with Last-Event-ID');
      assert.ok(resumed.every((e) => e.status === 200));
      const get0 = exchanges.find((e) => e.method === 'GET' && e.replica === 0)!;
      assert.ok(get0.ended && (get0.body === '' || get0.body.endsWith('\n\n')), 'the standalone stream on A ended at an event boundary');
      assert.deepEqual(exchanges.filter((e) => e.status >= 500), [], 'no 5xx reached the agent');
      assert.deepEqual(errors.filter((m) => /SSE stream disconnected/.test(m)), [], 'no stream was cut: each ended cleanly');
      // Not ready, not accepting: the ingress keeps it out.
      const probe = await fetch(`${replicaA.url}/readyz`).then((r) => r.status, () => 'refused');
      assert.ok(probe === 'refused' || probe === 503, String(probe));

      // The session goes on through B.
      const echo = await client.callTool({ name: 'echo', arguments: { text: 'still here' } });
      assert.deepEqual((echo as { content: unknown }).content, [{ type: 'text', text: 'still here' }]);
    } finally {
      await client.close();
    }
  });
});
