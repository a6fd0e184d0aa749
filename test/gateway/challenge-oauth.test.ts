/**
 * auth_required by channel with the real mode `oauth` (issue 5 part A's flow, credential and
 * routes, assembled by its harness) in front of a real MCP server that trusts only its own real
 * authorization server, and the real SDK `Client` as the agent. The user's connection is dropped
 * mid-session (DELETE /connections/notes); the next call must tell the agent where to send the
 * user, by the channel its client understands, and succeed once the user has been there.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError, UrlElicitationRequiredError } from '@modelcontextprotocol/sdk/types.js';
import { AUTH_REQUIRED_RPC_CODE } from '../../src/gateway/challenge.ts';
import { bearerChallenge, parseWwwAuthenticate } from '../../src/upstream-oauth/www-authenticate.ts';
import { authRequiredOf, sessionOf, startHarness, type Harness, type TestUser } from '../upstream-oauth/harness.ts';

let h: Harness;
const clients: Client[] = [];
before(async () => {
  h = await startHarness({ registration: 'dcr' });
});
after(async () => {
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  await h?.close();
});

/** A fresh session of alice, connected to the upstream through the browser. */
async function connectedUser(): Promise<TestUser> {
  const user = sessionOf('alice');
  const authUrl = authRequiredOf(await h.rpc(user, 'tools/call', { name: 'whoami', arguments: {} })).auth_url;
  const page = await h.connect(h.browser(user), authUrl);
  assert.equal(page.status, 200, page.body);
  return user;
}

/** The SDK client as the agent, with our bearer for `user`. */
async function agent(user: TestUser, elicitationUrl: boolean): Promise<Client> {
  const transport = new StreamableHTTPClientTransport(new URL(`${h.listenUrl}/notes/mcp`), { requestInit: { headers: { authorization: h.bearer(user) } } });
  const client = new Client({ name: 'agent', version: '1.0.0' }, { capabilities: elicitationUrl ? { elicitation: { url: {} } } : {} });
  clients.push(client);
  await client.connect(transport);
  return client;
}

async function disconnect(user: TestUser): Promise<void> {
  const response = await h.request('/connections/notes', { method: 'DELETE', user });
  assert.equal(response.status, 200, response.body);
}

const whoami = (client: Client) => client.callTool({ name: 'whoami', arguments: {} });

describe('auth_required through the real oauth mode, seen by the SDK client', () => {
  // This upstream is stateless (no Mcp-Session-Id, no GET stream): the client is remembered by our
  // sid, and there is no stream for notifications/elicitation/complete (challenge.test.ts and
  // challenge-stream.test.ts cover it with a stateful upstream).
  test('URL elicitation: -32042 for a client that declared it, the user connects, the retry succeeds', async () => {
    const user = await connectedUser();
    const client = await agent(user, true);
    assert.equal((await whoami(client)).isError, undefined);
    await disconnect(user);

    const error = await whoami(client).then(() => assert.fail('expected URL elicitation'), (e: unknown) => e);
    assert.ok(error instanceof UrlElicitationRequiredError, `got ${String(error)}`);
    const [elicitation] = error.elicitations;
    assert.equal(elicitation!.mode, 'url');
    assert.ok(elicitation!.url.startsWith(`${h.publicUrl}/oauth/upstream/start?flow=`));

    const page = await h.connect(h.browser(user), elicitation!.url);
    assert.equal(page.status, 200, page.body);
    assert.equal(h.connected.at(-1)?.elicitationId, elicitation!.elicitationId, 'the callback reports the elicitation the agent was given');

    const retried = await whoami(client);
    assert.equal(retried.isError, undefined);
  });

  test('tool result for a client without URL elicitation; a non-tool request gets the JSON-RPC error; the retry succeeds', async () => {
    const user = await connectedUser();
    const client = await agent(user, false);
    await disconnect(user);

    const result = await whoami(client);
    assert.equal(result.isError, true);
    const data = result.structuredContent as { status: string; auth_url: string; server_name: string };
    assert.equal(data.status, 'auth_required');
    assert.equal(data.server_name, 'notes');
    assert.ok(data.auth_url.startsWith(`${h.publicUrl}/oauth/upstream/start?flow=`));

    const error = await client.listTools().then(() => assert.fail('expected auth_required'), (e: unknown) => e);
    assert.ok(error instanceof McpError);
    assert.equal(error.code, AUTH_REQUIRED_RPC_CODE);
    assert.equal((error.data as { auth_url: string }).auth_url, data.auth_url, 'concurrent requests share one pending flow');
    // Agents show the error's message, not its data: the URL must be in the text the user reads.
    assert.equal(error.message, `MCP error ${AUTH_REQUIRED_RPC_CODE}: Authorization is needed to use "notes": open ${data.auth_url}, approve access, then retry.`);

    assert.equal((await h.connect(h.browser(user), data.auth_url)).status, 200);
    assert.equal((await whoami(client)).isError, undefined);
    assert.ok((await client.listTools()).tools.some((t) => t.name === 'whoami'));
  });

  test('before any connection, initialize is answered with the 403 step-up for the connect scope', async () => {
    const user = sessionOf('alice');
    const client = new Client({ name: 'agent', version: '1.0.0' });
    clients.push(client);
    const transport = new StreamableHTTPClientTransport(new URL(`${h.listenUrl}/notes/mcp`), { requestInit: { headers: { authorization: h.bearer(user) } } });
    const error = await client.connect(transport).then(() => assert.fail('expected 403'), (e: unknown) => e);
    assert.ok(error instanceof StreamableHTTPError);
    assert.equal(error.code, 403);

    const raw = await h.rpc(user, 'initialize', { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } });
    assert.equal(raw.status, 403);
    const challenge = bearerChallenge(parseWwwAuthenticate(raw.headers['www-authenticate'] as string));
    assert.equal(challenge?.error, 'insufficient_scope');
    assert.deepEqual(challenge?.scope, ['mcp', 'mcpgate:connect:notes']);
    assert.equal(challenge?.resourceMetadata, `${h.publicUrl}/.well-known/oauth-protected-resource/notes/mcp`);
  });

  test('the upstream saw only tokens of its own authorization server', () => {
    assert.ok(h.upstream.seenAuthorization.length > 0);
    for (const seen of h.upstream.seenAuthorization) assert.ok(seen === undefined || !seen.includes('gw-test'), `upstream saw our token: ${seen}`);
  });
});
