/**
 * MCP session ids are bound to the user they were issued to (MCP security best practices,
 * "Session Hijacking"). Everything is real: two users log in through our authorization server
 * and the development IdP (its login form, our consent page, our token endpoint), the upstream
 * is a stateful MCP SDK server behind one shared static credential, the agent is the SDK client,
 * and two gateway replicas share a real redis-server, so a session opened on one replica is
 * served (and refused) by the other.
 *
 * The attack: Bob, a user of the same gateway, presents Alice's `Mcp-Session-Id` and rides her
 * session: its state, its SSE stream, even ending it.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';
import { generateSigningKeyPem } from '../../src/authserver/tokens/keys.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import type { Store } from '../../src/store/port.ts';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { createBrowser, formAction } from '../upstream-oauth/browser.ts';
import { MCP_POST_HEADERS, rpc, send, type RawResponse } from './http-client.ts';

/** A stateful MCP server: each session keeps a note; every Authorization header it saw is recorded. */
interface NotesUpstream {
  url: string;
  authorizations: string[];
  close(): Promise<void>;
}

async function startNotesUpstream(): Promise<NotesUpstream> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const authorizations: string[] = [];
  const server: Server = createServer(async (req, res) => {
    authorizations.push(String(req.headers.authorization ?? ''));
    const sessionId = req.headers['mcp-session-id'];
    const existing = typeof sessionId === 'string' ? transports.get(sessionId) : undefined;
    if (existing) return existing.handleRequest(req, res);
    if (sessionId !== undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}');
      return;
    }
    let note = '';
    const mcp = new McpServer({ name: 'notes', version: '1.0.0' });
    mcp.registerTool('remember', { inputSchema: { text: z.string() } }, async ({ text }) => {
      note = text;
      return { content: [{ type: 'text', text: 'ok' }] };
    });
    mcp.registerTool('recall', {}, async () => ({ content: [{ type: 'text', text: note }] }));
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => void transports.set(id, transport),
      onsessionclosed: (id) => void transports.delete(id),
    });
    await mcp.connect(transport);
    await transport.handleRequest(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/mcp`,
    authorizations,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

let redis: RedisServer;
let idp: DevIdp;
let upstream: NotesUpstream;
let replicaA: TestGateway;
let replicaB: TestGateway;
const stores: Store[] = [];

before(async () => {
  redis = await startRedis();
  idp = await startDevIdp();
  upstream = await startNotesUpstream();
  const pem = generateSigningKeyPem();
  const storeKey = randomBytes(32);
  const keyPrefix = `owner${randomBytes(3).toString('hex')}:`;
  const replica = (publicUrl?: URL) => {
    const store = createValkeyStore({ url: redis.url, keyPrefix });
    stores.push(store);
    return startGateway({
      // One public URL for both, as behind an ingress: a token from one replica is good at the other.
      ...(publicUrl ? { server: { publicUrl: publicUrl.origin } } : {}),
      idp,
      storeKey,
      store,
      authServer: { signingKeys: ['file:/keys/signing.pem'] },
      files: { '/keys/signing.pem': pem },
      env: { NOTES_TOKEN: 'shared-static-token' },
      upstreams: [
        { name: 'notes', url: upstream.url, auth: { mode: 'static', value: 'env:NOTES_TOKEN' } },
        { name: 'open', url: upstream.url, auth: { mode: 'none' } },
      ],
    });
  };
  replicaA = await replica();
  replicaB = await replica(replicaA.url);
});
after(async () => {
  await replicaA?.close();
  await replicaB?.close();
  await upstream?.close();
  await idp?.close();
  await redis?.stop();
});

const REDIRECT_URI = 'http://127.0.0.1:9/callback';
/** Every session id the agents were issued: none may appear whole in a log. */
const sessionIds: string[] = [];

/**
 * A user's login as an agent performs it: DCR, authorize with PKCE and resource, the IdP's login
 * form, our consent page, the code exchange. Returns our access token for `resource`.
 */
async function signIn(login: 'alice' | 'bob', upstreamName: string): Promise<string> {
  // The public URL (replica A's address stands for the ingress).
  const base = replicaA.url.origin;
  const resource = `${base}/${upstreamName}/mcp`;
  const registered = await fetch(`${base}/oauth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [REDIRECT_URI], client_name: `${login}'s agent`, token_endpoint_auth_method: 'none' }),
  });
  assert.equal(registered.status, 201);
  const { client_id: clientId } = (await registered.json()) as { client_id: string };
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const query = new URLSearchParams({
    client_id: clientId,
    redirect_uri: REDIRECT_URI,
    response_type: 'code',
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: 'st',
    scope: 'mcp',
    resource,
  });
  const browser = createBrowser();
  const backAtAgent = (url: URL) => url.href.startsWith(REDIRECT_URI);
  let page = await browser.open(`${base}/oauth/authorize?${query}`, { stopAt: backAtAgent });
  const password = idp.users.find((u) => u.login === login)!.password;
  page = await browser.submit(formAction(page, /\/login$/), { login, password }, { stopAt: backAtAgent });
  if (page.status === 200 && page.body.includes('name="consent_id"')) {
    const fields = Object.fromEntries([...page.body.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)].map((m) => [m[1]!, m[2]!.replace(/&amp;/g, '&')]));
    page = await browser.submit(formAction(page, /\/oauth\/consent/), { ...fields, decision: 'approve' }, { stopAt: backAtAgent });
  }
  const location = new URL(String(page.headers.location));
  const code = location.searchParams.get('code');
  assert.ok(code, `an authorization code for ${login} (last page ${page.url}, ${page.status})`);
  const token = await fetch(`${base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', client_id: clientId, code, redirect_uri: REDIRECT_URI, code_verifier: verifier, resource }).toString(),
  });
  assert.equal(token.status, 200);
  return ((await token.json()) as { access_token: string }).access_token;
}

/** The SDK client as the agent, through one replica. */
async function connect(gateway: TestGateway, upstreamName: string, token: string): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const client = new Client({ name: 'agent', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(gateway.mcpUrl(upstreamName), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  await client.connect(transport);
  sessionIds.push(transport.sessionId!);
  return { client, transport };
}

/** A raw request carrying someone's session id. */
function ride(gateway: TestGateway, upstreamName: string, token: string, sessionId: string, method: 'POST' | 'GET' | 'DELETE', body?: string): Promise<RawResponse> {
  const headers = {
    ...(method === 'POST' ? MCP_POST_HEADERS : { accept: 'text/event-stream' }),
    authorization: `Bearer ${token}`,
    'mcp-session-id': sessionId,
    'mcp-protocol-version': '2025-06-18',
  };
  // A GET that is (wrongly) served is an SSE stream that never ends: read only its head.
  if (method === 'GET') return headOnly(gateway.mcpUrl(upstreamName), headers);
  return send(gateway.mcpUrl(upstreamName), { method, headers, body });
}

async function headOnly(url: URL, headers: Record<string, string>): Promise<RawResponse> {
  const controller = new AbortController();
  const res = await fetch(url, { headers, signal: controller.signal });
  const body = res.headers.get('content-type')?.startsWith('text/event-stream') ? '' : await res.text();
  controller.abort();
  return { status: res.status, headers: Object.fromEntries(res.headers), body };
}

function assertUnknownSession(res: RawResponse, what: string): void {
  assert.equal(res.status, 404, `${what}: ${res.status} ${res.body}`);
  const error = JSON.parse(res.body) as { jsonrpc: string; error: { code: number; message: string } };
  assert.equal(error.jsonrpc, '2.0');
  assert.equal(error.error.message, 'Session not found');
}

describe('an MCP session is served only to the user it was issued to', () => {
  test('Bob presenting Alice’s Mcp-Session-Id (static upstream, another replica) gets 404: no state, no stream, no DELETE', async () => {
    const aliceToken = await signIn('alice', 'notes');
    const bobToken = await signIn('bob', 'notes');
    const alice = await connect(replicaA, 'notes', aliceToken);
    try {
      await alice.client.callTool({ name: 'remember', arguments: { text: 'alice-private-note' } });
      const aliceSession = alice.transport.sessionId!;
      assert.ok(aliceSession);

      // Alice's own session works from the other replica: the binding is in the shared store.
      const own = await ride(replicaB, 'notes', aliceToken, aliceSession, 'POST', rpc(2, 'tools/call', { name: 'recall', arguments: {} }));
      assert.equal(own.status, 200, own.body);
      assert.match(own.body, /alice-private-note/);

      for (const replica of [replicaA, replicaB]) {
        const read = await ride(replica, 'notes', bobToken, aliceSession, 'POST', rpc(3, 'tools/call', { name: 'recall', arguments: {} }));
        assertUnknownSession(read, 'Bob reading Alice’s session');
        assert.ok(!read.body.includes('alice-private-note'));
        assertUnknownSession(await ride(replica, 'notes', bobToken, aliceSession, 'GET'), 'Bob opening Alice’s SSE stream');
        assertUnknownSession(await ride(replica, 'notes', bobToken, aliceSession, 'DELETE'), 'Bob ending Alice’s session');
      }

      // Alice's session is untouched.
      const after = await alice.client.callTool({ name: 'recall', arguments: {} });
      assert.deepEqual(after.content, [{ type: 'text', text: 'alice-private-note' }]);
    } finally {
      await alice.transport.terminateSession().catch(() => undefined);
      await alice.client.close();
    }
  });

  test('mode none too; an unknown or ended session id is 404 for its owner as well', async () => {
    const aliceToken = await signIn('alice', 'open');
    const bobToken = await signIn('bob', 'open');
    const bob = await connect(replicaB, 'open', bobToken);
    const bobSession = bob.transport.sessionId!;
    await bob.client.callTool({ name: 'remember', arguments: { text: 'bob-note' } });
    assertUnknownSession(await ride(replicaA, 'open', aliceToken, bobSession, 'POST', rpc(1, 'tools/call', { name: 'recall', arguments: {} })), 'Alice reading Bob’s session');
    // A session id of another upstream is another session.
    const bobNotesToken = await signIn('bob', 'notes');
    assertUnknownSession(await ride(replicaA, 'notes', bobNotesToken, bobSession, 'POST', rpc(1, 'ping')), 'Bob’s session id at another upstream');
    assertUnknownSession(await ride(replicaA, 'open', aliceToken, randomUUID(), 'POST', rpc(1, 'ping')), 'a session id never issued');

    await bob.transport.terminateSession();
    await bob.client.close();
    assertUnknownSession(await ride(replicaB, 'open', bobToken, bobSession, 'POST', rpc(1, 'ping')), 'Bob’s own session after he ended it');
  });

  test('the upstream saw only the configured credential, and no full session id reached the log', () => {
    assert.ok(upstream.authorizations.length > 0);
    for (const authorization of upstream.authorizations) assert.ok(authorization === 'Bearer shared-static-token' || authorization === '');
    const logged = replicaA.logs.text() + replicaB.logs.text();
    assert.ok(sessionIds.length >= 2);
    for (const id of sessionIds) assert.ok(!logged.includes(id), 'a full Mcp-Session-Id was logged');
  });
});

after(async () => {
  await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
});
