/**
 * auth_required by channel (issue 5), seen by the real SDK client as the agent,
 * through the gateway path, in front of a real SDK MCP server that only accepts its own token.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitationCompleteNotificationSchema, ErrorCode, McpError, UrlElicitationRequiredError } from '@modelcontextprotocol/sdk/types.js';
import { AUTH_REQUIRED_RPC_CODE } from '../../src/gateway/challenge.ts';
import { bearerChallenge, parseWwwAuthenticate } from '../../src/upstream-oauth/www-authenticate.ts';
import { PRINCIPAL, UPSTREAM_TOKEN, startGateway, startUpstream, testCredential, type TestCredential, type TestGateway, type TestUpstream } from './challenge.fixture.ts';

const AGENT_TOKEN = 'agent-token-never-forwarded';

describe('auth_required channels', () => {
  let open: TestUpstream;
  let closed: TestUpstream;
  let gateway: TestGateway;
  const credentials: Record<string, TestCredential> = {};
  const clients: Client[] = [];

  before(async () => {
    open = await startUpstream({ open: true });
    closed = await startUpstream({ open: false });
    const base = () => gateway.url.origin;
    // One upstream per scenario, so "connecting" in one test leaves the others untouched.
    for (const name of ['elicit', 'tools', 'rpc']) credentials[name] = testCredential(name, base, false);
    credentials.locked = testCredential('locked', base, true);
    credentials.forced = testCredential('forced', base, false);
    gateway = await startGateway([
      { name: 'elicit', url: open.url, credentials: credentials.elicit! },
      { name: 'tools', url: open.url, credentials: credentials.tools! },
      { name: 'rpc', url: open.url, credentials: credentials.rpc! },
      { name: 'locked', url: closed.url, credentials: credentials.locked! },
      { name: 'forced', url: open.url, credentials: credentials.forced!, challenge: 'tool_result' },
    ]);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await gateway?.close();
    await open?.close();
    await closed?.close();
  });

  async function connect(upstream: string, elicitationUrl: boolean): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
    const client = new Client({ name: 'agent', version: '1.0.0' }, { capabilities: elicitationUrl ? { elicitation: { url: {} } } : {} });
    const transport = new StreamableHTTPClientTransport(new URL(`/${upstream}/mcp`, gateway.url), {
      requestInit: { headers: { authorization: `Bearer ${AGENT_TOKEN}` } },
      reconnectionOptions: { initialReconnectionDelay: 10, maxReconnectionDelay: 50, reconnectionDelayGrowFactor: 1, maxRetries: 20 },
    });
    clients.push(client);
    await client.connect(transport);
    return { client, transport };
  }

  test('an elicitation-capable client gets -32042, hears elicitation/complete on its held stream, and succeeds on retry', async () => {
    const credential = credentials.elicit!;
    const { client, transport } = await connect('elicit', true);
    const completed = new Promise<string>((resolve) => client.setNotificationHandler(ElicitationCompleteNotificationSchema, (n) => resolve(n.params.elicitationId)));

    const error = await client.callTool({ name: 'whoami', arguments: {} }).then(
      () => assert.fail('expected URL elicitation'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof UrlElicitationRequiredError, `got ${String(error)}`);
    assert.equal(error.code, ErrorCode.UrlElicitationRequired);
    assert.deepEqual(error.elicitations, [
      { mode: 'url', elicitationId: credential.authRequired.elicitationId, url: credential.authRequired.authUrl, message: credential.authRequired.message },
    ]);

    // The agent's GET stream could not reach the upstream (401): the gateway holds it. Wait until it is registered.
    await until(() => gateway.streams.size > 0);
    credential.connected = true; // what the upstream callback (issue 5 part A) does before its onConnected hook
    const sent = gateway.streams.notifyElicitationComplete({ upstream: 'elicit', mcpSessionId: transport.sessionId, sessionId: PRINCIPAL.sessionId, elicitationId: credential.authRequired.elicitationId });
    assert.equal(sent, 1);
    assert.equal(await completed, credential.authRequired.elicitationId);

    const result = await client.callTool({ name: 'whoami', arguments: {} });
    assert.deepEqual(result.content, [{ type: 'text', text: 'hello from upstream' }]);
    // The held stream ended after the notification; the SDK reconnects and now reaches the upstream.
    await until(() => open.seenAuthorization.filter((a) => a === `Bearer ${UPSTREAM_TOKEN}`).length >= 2 && gateway.streams.size > 0);
  });

  test('a client without URL elicitation gets the auth_required tool result, and succeeds on retry', async () => {
    const credential = credentials.tools!;
    const { client } = await connect('tools', false);
    const first = await client.callTool({ name: 'whoami', arguments: {} });
    assert.equal(first.isError, true);
    assert.deepEqual(first.structuredContent, {
      status: 'auth_required',
      auth_url: credential.authRequired.authUrl,
      server_name: 'tools',
      message: credential.authRequired.message,
    });
    const [text] = first.content as { type: string; text: string }[];
    assert.equal(text!.type, 'text');
    assert.match(text!.text, /Authorization required for tools: open .+ and then retry\./);
    assert.ok(text!.text.includes(credential.authRequired.authUrl));

    credential.connected = true;
    const second = await client.callTool({ name: 'whoami', arguments: {} });
    assert.equal(second.isError, undefined);
    assert.deepEqual(second.content, [{ type: 'text', text: 'hello from upstream' }]);
  });

  test('a non-tool request gets the JSON-RPC auth_required error with its own id', async () => {
    const credential = credentials.rpc!;
    const { client, transport } = await connect('rpc', false);
    const error = await client.listResources().then(
      () => assert.fail('expected auth_required'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof McpError && !(error instanceof UrlElicitationRequiredError), `got ${String(error)}`);
    assert.equal(error.code, AUTH_REQUIRED_RPC_CODE);
    assert.deepEqual(error.data, {
      status: 'auth_required',
      auth_url: credential.authRequired.authUrl,
      server_name: 'rpc',
      message: credential.authRequired.message,
      elicitationId: credential.authRequired.elicitationId,
    });

    // The same on the wire, to see the id and the HTTP status the SDK needs (200, JSON).
    const response = await fetch(new URL('/rpc/mcp', gateway.url), {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-session-id': transport.sessionId!,
        'mcp-protocol-version': '2025-11-25',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 'req-77', method: 'prompts/list', params: {} }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type')!, /^application\/json/);
    const body = (await response.json()) as { id: unknown; error: { code: number; data: { status: string } } };
    assert.equal(body.id, 'req-77');
    assert.equal(body.error.code, AUTH_REQUIRED_RPC_CODE);
    assert.equal(body.error.data.status, 'auth_required');
  });

  test('initialize without a session gets the 403 re-challenge with the connect scope added', async () => {
    const client = new Client({ name: 'agent', version: '1.0.0' });
    clients.push(client);
    const error = await client.connect(new StreamableHTTPClientTransport(new URL('/locked/mcp', gateway.url))).then(
      () => assert.fail('expected 403'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof StreamableHTTPError, `got ${String(error)}`);
    assert.equal(error.code, 403);

    const response = await fetch(new URL('/locked/mcp', gateway.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }),
    });
    assert.equal(response.status, 403);
    const challenge = bearerChallenge(parseWwwAuthenticate(response.headers.get('www-authenticate') ?? undefined));
    assert.deepEqual(challenge && { error: challenge.error, scope: challenge.scope, resourceMetadata: challenge.resourceMetadata }, {
      error: 'insufficient_scope',
      scope: ['openid', 'mcp', 'mcpgate:connect:locked'],
      resourceMetadata: `${gateway.url.origin}/.well-known/oauth-protected-resource/locked/mcp`,
    });
    const body = (await response.json()) as { id: unknown; error: { data: { status: string; auth_url: string } } };
    assert.equal(body.id, 1);
    assert.equal(body.error.data.status, 'auth_required');
  });

  test('challenge: tool_result answers tools/call with the tool result even for an elicitation-capable client', async () => {
    const { client } = await connect('forced', true);
    const result = await client.callTool({ name: 'whoami', arguments: {} });
    assert.equal(result.isError, true);
    assert.equal((result.structuredContent as { status: string }).status, 'auth_required');
  });

  test('the upstream never saw the agent token, only its own or none', () => {
    for (const seen of [...open.seenAuthorization, ...closed.seenAuthorization]) {
      assert.ok(seen === undefined || seen === `Bearer ${UPSTREAM_TOKEN}`, `upstream saw ${seen}`);
    }
    assert.ok(open.seenAuthorization.includes(`Bearer ${UPSTREAM_TOKEN}`));
  });
});

/** Waits for a condition driven by network events (polled on the event loop, no fixed sleeps asserted on). */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}
