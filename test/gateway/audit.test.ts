/**
 * The audit trail of MCP requests, as an operator reads it: a real SDK agent logs in (Chromium,
 * the development IdP) and calls tools through the gateway; the access-log line of each request
 * names the user, the upstream, the JSON-RPC method, the tool, the outcome (with the
 * auth_required channel) and the upstream status, and `mcpgate_tool_calls_total` counts calls by
 * upstream, tool and outcome — with tool names only from the upstream's own `tools/list`.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { Browser } from 'playwright-core';
import { z } from 'zod';
import { startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { closeChromium, connectWithLogin, createBrowserAgent, launchChromium, newBrowserContext, type BrowserAgent } from '../support/browser-agent.ts';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { metricValue, scrapeMetrics } from '../support/metrics.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';

/** A stateless SDK MCP server with two tools: `echo` and `explode` (a tool error). */
async function startToolServer(): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer(async (req, res) => {
    const mcp = new McpServer({ name: 'tools', version: '1.0.0' });
    mcp.registerTool('echo', { description: 'Echoes its text', inputSchema: { text: z.string() } }, async ({ text }) => ({ content: [{ type: 'text', text }] }));
    mcp.registerTool('explode', { description: 'Always fails' }, async () => ({ content: [{ type: 'text', text: 'boom' }], isError: true }));
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on('close', () => void mcp.close());
    await mcp.connect(transport);
    await transport.handleRequest(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/mcp`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

let idp: DevIdp;
let tools: { url: string; close(): Promise<void> };
let notes: UpstreamWithAs;
let gateway: TestGateway;
let browser: Browser;
let catcher: RecordingServer;

before(async () => {
  [idp, tools, notes, catcher] = await Promise.all([startDevIdp(), startToolServer(), startUpstreamWithAs({ registration: 'dcr', openHandshake: true }), startRecordingServer()]);
  gateway = await startGateway({
    idp,
    upstreams: [
      { name: 'tools', url: tools.url, auth: { mode: 'idp' } },
      { name: 'notes', url: notes.mcpUrl, auth: { mode: 'oauth', challenge: 'tool_result' } },
    ],
  });
  browser = await launchChromium();
});
after(async () => {
  await closeChromium(browser);
  await gateway?.close();
  await Promise.all([tools?.close(), notes?.close(), catcher?.close(), idp?.close()]);
});

/** Access-log lines of the MCP path with a JSON-RPC method. */
function rpcLines(): Array<Record<string, unknown>> {
  return gateway.logs.records().filter((r) => r.msg === 'request' && r.route === '/{upstream}/mcp' && typeof r.rpc === 'string');
}

describe('audit: access log and tool metrics', () => {
  let agent: BrowserAgent;
  let client: Client;

  before(async () => {
    const user = idp.users.find((u) => u.login === 'alice')!;
    agent = createBrowserAgent({ context: await newBrowserContext(browser), user: { login: user.login, password: user.password }, redirectUri: `${catcher.url}/callback` });
    ({ client } = await connectWithLogin(agent, gateway.mcpUrl('tools')));
  });
  after(() => client?.close());

  test('a call before tools/list counts as "other"; after it, the listed name is the label', async () => {
    const before = await client.callTool({ name: 'echo', arguments: { text: 'hi' } });
    assert.deepEqual(before.content, [{ type: 'text', text: 'hi' }]);
    const listed = await client.listTools();
    assert.deepEqual(listed.tools.map((t) => t.name).sort(), ['echo', 'explode']);
    await client.callTool({ name: 'echo', arguments: { text: 'again' } });
    const failed = await client.callTool({ name: 'explode', arguments: {} });
    assert.equal(failed.isError, true);
    // A name the upstream never listed: whatever the upstream answers, it is no label.
    await client.callTool({ name: 'no-such-tool\u{1F4A5}', arguments: {} }).catch(() => undefined);

    const metrics = await scrapeMetrics(gateway.url);
    assert.equal(metricValue(metrics, 'mcpgate_tool_calls_total', { upstream: 'tools', tool: 'echo', outcome: 'ok' }), 1);
    assert.equal(metricValue(metrics, 'mcpgate_tool_calls_total', { upstream: 'tools', tool: 'explode', outcome: 'tool_error' }), 1);
    assert.equal(metricValue(metrics, 'mcpgate_tool_calls_total', { upstream: 'tools', tool: 'other', outcome: 'ok' }), 1, 'the call before tools/list');
    assert.equal(metricValue(metrics, 'mcpgate_tool_calls_total', { upstream: 'tools', tool: 'other', outcome: 'tool_error' }), 1, 'the unlisted tool');
    assert.doesNotMatch(metrics, /no-such-tool/);
  });

  test('each tools/call line names the user, upstream, method, tool, outcome and upstream status', () => {
    const calls = rpcLines().filter((r) => r.rpc === 'tools/call');
    assert.equal(calls.length, 4);
    for (const line of calls) {
      assert.equal(line.user, 'alice');
      assert.equal(line.upstream, 'tools');
      assert.equal(line.upstreamStatus, 200);
      assert.equal(line.status, 200);
    }
    assert.deepEqual(
      calls.map((r) => [r.tool, r.outcome]),
      [['echo', 'ok'], ['echo', 'ok'], ['explode', 'tool_error'], ['no-such-tool\u{1F4A5}', 'tool_error']],
    );
    const list = rpcLines().find((r) => r.rpc === 'tools/list')!;
    assert.equal(list.tool, undefined);
    assert.equal(list.outcome, 'ok');
    assert.equal(list.user, 'alice');
  });

  test('a tool name is cut to at most 128 characters in the log, the ellipsis included, and is "other" in the metrics', async () => {
    const long = `t${'x'.repeat(300)}`;
    await client.callTool({ name: long, arguments: {} }).catch(() => undefined);
    const line = rpcLines().at(-1)!;
    assert.equal(line.tool, `${long.slice(0, 127)}…`);
    assert.equal(String(line.tool).length, 128);
    // A character outside the BMP (two UTF-16 units) across the cut is left out whole, never halved.
    const astral = `t${'x'.repeat(125)}\u{1F4A5}${'y'.repeat(10)}`;
    await client.callTool({ name: astral, arguments: {} }).catch(() => undefined);
    assert.equal(rpcLines().at(-1)!.tool, `t${'x'.repeat(125)}…`);
    const metrics = await scrapeMetrics(gateway.url);
    assert.equal(metricValue(metrics, 'mcpgate_tool_calls_total', { upstream: 'tools', tool: 'other', outcome: 'tool_error' }), 3);
  });

  test('auth_required is an outcome, with the channel it went through', async () => {
    const notesAgent = createBrowserAgent({ context: await newBrowserContext(browser), user: agent.user, redirectUri: `${catcher.url}/callback` });
    const { client: notesClient } = await connectWithLogin(notesAgent, gateway.mcpUrl('notes'));
    try {
      const result = await notesClient.callTool({ name: 'whoami', arguments: {} });
      assert.equal(result.isError, true);
      assert.equal((result.structuredContent as { status?: string }).status, 'auth_required');
    } finally {
      await notesClient.close();
    }
    const line = rpcLines().filter((r) => r.upstream === 'notes' && r.rpc === 'tools/call').at(-1)!;
    assert.equal(line.outcome, 'auth_required');
    assert.equal(line.authRequired, 'tool_result');
    assert.equal(line.tool, 'whoami');
    assert.equal(line.user, 'alice');
    const metrics = await scrapeMetrics(gateway.url);
    assert.equal(metricValue(metrics, 'mcpgate_tool_calls_total', { upstream: 'notes', tool: 'other', outcome: 'auth_required' }), 1);
  });

  test('a refused token is "denied" and names nobody', async () => {
    const res = await fetch(gateway.mcpUrl('tools'), {
      method: 'POST',
      headers: { authorization: 'Bearer not-a-token', 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'echo', arguments: {} } }),
    });
    assert.equal(res.status, 401);
    await res.text();
    const line = gateway.logs.records().filter((r) => r.msg === 'request' && r.status === 401).at(-1)!;
    assert.equal(line.outcome, 'denied');
    assert.equal(line.user, undefined);
  });

  test('no token and no full session id is ever logged', () => {
    const text = gateway.logs.text();
    const tokens = agent.tokens()!;
    assert.ok(!text.includes(tokens.access_token), 'access token');
    assert.ok(!text.includes(tokens.refresh_token!), 'refresh token');
    const sid = String(JSON.parse(Buffer.from(tokens.access_token.split('.')[1]!, 'base64url').toString()).sid);
    assert.ok(sid.length > 8);
    assert.ok(!text.includes(sid), 'full session id');
    assert.ok(text.includes(`"sid":"${sid.slice(0, 8)}"`), 'the session tag is there');
  });
});

describe('log.user chooses who a line names', () => {
  const cases = [
    { user: undefined, expected: (u: { email: string }) => u.email }, // the default: the configured claim
    { user: 'sub', expected: (u: { sub: string }) => u.sub },
    { user: 'claim', expected: (u: { email: string }) => u.email },
    { user: 'none', expected: () => undefined },
  ] as const;
  for (const c of cases) {
    test(`log.user: ${c.user ?? '(absent)'} with idp.userClaim: email`, async () => {
      const log = c.user === undefined ? undefined : { user: c.user };
      const gw = await startGateway({ idp, idpExtra: { userClaim: 'email' }, log, upstreams: [{ name: 'tools', url: tools.url, auth: { mode: 'idp' } }] });
      try {
        const user = idp.users.find((u) => u.login === 'bob')!;
        const agent = createBrowserAgent({ context: await newBrowserContext(browser), user: { login: user.login, password: user.password }, redirectUri: `${catcher.url}/callback` });
        const { client } = await connectWithLogin(agent, gw.mcpUrl('tools'));
        await client.callTool({ name: 'echo', arguments: { text: 'x' } });
        await client.close();
        const line = gw.logs.records().filter((r) => r.msg === 'request' && r.rpc === 'tools/call').at(-1)!;
        assert.notEqual(user.sub, user.email);
        assert.equal(line.user, c.expected(user));
      } finally {
        await gw.close();
      }
    });
  }
});
