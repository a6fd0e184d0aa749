/**
 * A real MCP client and server (the official SDK) talking through the gateway (issue 3):
 * every kind of MCP traffic must work as it does directly — requests, progress, server→client
 * requests mid-call, the standalone GET stream, session end, and resumption of a dropped stream.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ElicitRequestSchema, LoggingMessageNotificationSchema, ResourceListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { startDemoMcpServer, type DemoMcpServer } from '../../demo/mcp-server.ts';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { waitFor } from '../support/mcp-upstream.ts';
import { connectAgent, type Agent } from './agent.ts';
import { MCP_POST_HEADERS, rpc, send } from './http-client.ts';

type TextResult = { content: Array<{ type: string; text?: string }>; isError?: boolean };
const text = (result: unknown) => (result as TextResult).content.map((c) => c.text ?? '').join('');

describe('MCP SDK client ↔ gateway ↔ MCP SDK server', () => {
  let demo: DemoMcpServer;
  let gateway: TestGateway;
  const agents: Agent[] = [];

  before(async () => {
    demo = await startDemoMcpServer({ retryIntervalMs: 50 });
    gateway = await startGateway({ upstreams: [{ name: 'demo', url: demo.url }] });
  });

  after(async () => {
    await Promise.all(agents.map((a) => a.close().catch(() => undefined)));
    await gateway.close();
    await demo.close();
  });

  async function agent(options?: Parameters<typeof connectAgent>[1]): Promise<Agent> {
    const a = await connectAgent(gateway.mcpUrl('demo'), options);
    agents.push(a);
    return a;
  }

  it('initializes a session the upstream issued, lists and calls tools', async () => {
    const a = await agent();
    assert.equal(a.client.getServerVersion()?.name, 'mcpgate-demo');
    const sessionId = a.transport.sessionId;
    assert.ok(sessionId, 'the agent got an Mcp-Session-Id through the gateway');
    assert.ok(demo.sessionIds().includes(sessionId), 'it is the upstream\'s own session id');
    assert.equal(a.transport.protocolVersion, '2025-11-25');

    const { tools } = await a.client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ['add', 'ask', 'echo', 'notify', 'slow_count']);

    assert.equal(text(await a.client.callTool({ name: 'echo', arguments: { text: 'through the gateway' } })), 'through the gateway');
    assert.equal(text(await a.client.callTool({ name: 'add', arguments: { a: 2, b: 40 } })), '42');
  });

  it('delivers progress notifications during a call, then its result', async () => {
    const a = await agent();
    const progress: number[] = [];
    const result = await a.client.callTool({ name: 'slow_count', arguments: { to: 4, intervalMs: 20 } }, undefined, {
      onprogress: (p) => progress.push(p.progress),
    });
    assert.deepEqual(progress, [1, 2, 3, 4]);
    assert.equal(text(result), 'counted to 4');
  });

  it('carries a server→client elicitation request mid-call and the agent\'s answer back', async () => {
    const a = await agent({ capabilities: { elicitation: {} } });
    const questions: string[] = [];
    a.client.setRequestHandler(ElicitRequestSchema, async (request) => {
      questions.push(request.params.message);
      return { action: 'accept', content: { answer: 'forty-two' } };
    });
    const result = await a.client.callTool({ name: 'ask', arguments: { question: 'Meaning of life?' } });
    assert.deepEqual(questions, ['Meaning of life?']);
    assert.equal(text(result), 'you answered: forty-two');
  });

  it('keeps the standalone GET stream open and delivers the upstream\'s notifications on it', async () => {
    const a = await agent();
    const logged: unknown[] = [];
    let listChanged = 0;
    a.client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logged.push(n.params.data));
    a.client.setNotificationHandler(ResourceListChangedNotificationSchema, () => void listChanged++);
    // The upstream registers the stream before it sends its headers: once the agent has them, it is live.
    await waitFor(() => a.exchanges.some((e) => e.method === 'GET' && e.status === 200 && e.contentType.startsWith('text/event-stream')), 'the GET stream');

    await a.client.callTool({ name: 'notify', arguments: { message: 'on the call stream' } });
    assert.deepEqual(logged, ['on the call stream'], 'the request-scoped notification came on the POST stream');
    await waitFor(() => listChanged === 1, 'resources/list_changed on the standalone stream');
  });

  it('DELETE ends the upstream session; a later request with its id gets the upstream\'s 404', async () => {
    const a = await agent();
    const sessionId = a.transport.sessionId!;
    assert.ok(demo.sessionIds().includes(sessionId));

    await a.transport.terminateSession();
    assert.ok(demo.seenRequests.some((r) => r.method === 'DELETE' && r.headers['mcp-session-id'] === sessionId), 'the DELETE reached the upstream');
    assert.ok(!demo.sessionIds().includes(sessionId), 'the upstream ended the session');

    const later = await send(gateway.mcpUrl('demo'), {
      method: 'POST',
      headers: { ...MCP_POST_HEADERS, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' },
      body: rpc(9, 'tools/list'),
    });
    assert.equal(later.status, 404);
    assert.deepEqual(JSON.parse(later.body), { jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
  });

  it('resumes a dropped call stream with Last-Event-ID: the remaining progress and the result arrive', async () => {
    const a = await agent();
    const progress: number[] = [];
    let dropped = 0;
    const call = a.client.callTool({ name: 'slow_count', arguments: { to: 6, intervalMs: 60 } }, undefined, {
      onprogress: (p) => {
        progress.push(p.progress);
        if (p.progress === 2) dropped = a.dropPostStreams();
      },
    });
    const result = await call;
    assert.equal(dropped, 1, 'the call\'s SSE stream was cut after the second progress event');
    assert.equal(text(result), 'counted to 6');
    assert.deepEqual(progress, [1, 2, 3, 4, 5, 6], 'nothing lost, nothing repeated');

    const resumed = a.exchanges.filter((e) => e.method === 'GET' && e.lastEventId !== undefined);
    assert.equal(resumed.length, 1, 'the agent reconnected once, with Last-Event-ID');
    assert.equal(resumed[0]!.status, 200);
    assert.ok(
      demo.seenRequests.some((r) => r.method === 'GET' && r.headers['last-event-id'] === resumed[0]!.lastEventId),
      'the upstream received the same Last-Event-ID',
    );
  });
});
