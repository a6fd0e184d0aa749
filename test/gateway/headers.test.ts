/**
 * What the upstream receives and what the agent gets back, seen from both ends:
 * no agent credential, cookie or hop-by-hop header upstream; forwarding headers and
 * the configured static credential added; MCP headers of every protocol version untouched.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { OutgoingHttpHeaders } from 'node:http';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { startRawUpstream, type RawUpstream, type RecordedRequest } from '../support/mcp-upstream.ts';
import { MCP_POST_HEADERS, rpc, send, type RawResponse, type SendOptions } from './http-client.ts';

const PROTOCOL_VERSIONS = ['2025-03-26', '2025-06-18', '2025-11-25', '2026-07-28'];
const TRACEPARENT = /^00-[\da-f]{32}-[\da-f]{16}-[\da-f]{2}$/;

describe('headers through the gateway', () => {
  let upstream: RawUpstream;
  let gateway: TestGateway;
  let calls = 0;

  before(async () => {
    upstream = await startRawUpstream();
    gateway = await startGateway({
      upstreams: [
        { name: 'plain', url: upstream.url },
        { name: 'envtoken', url: upstream.url, auth: { mode: 'static', value: 'env:UPSTREAM_TOKEN' } },
        { name: 'filekey', url: upstream.url, auth: { mode: 'static', header: 'X-Api-Key', value: 'file:/run/secrets/api-key' } },
        { name: 'filebasic', url: upstream.url, auth: { mode: 'static', value: 'file:/run/secrets/basic' } },
      ],
      server: { trustedProxies: ['127.0.0.2'] },
      env: { UPSTREAM_TOKEN: 'tok-from-env-123' },
      files: { '/run/secrets/api-key': 'key-from-file\n', '/run/secrets/basic': 'Basic dXNlcjpwYXNz\n' },
    });
  });

  after(async () => {
    await gateway.close();
    await upstream.close();
  });

  /** Sends through the gateway and returns the answer with the request the upstream saw for it. */
  async function call(name: string, options: SendOptions): Promise<{ response: RawResponse; received: RecordedRequest }> {
    const tag = String(++calls);
    const response = await send(gateway.mcpUrl(name), { ...options, headers: { ...options.headers, 'x-test-call': tag } });
    const received = upstream.requests.find((r) => r.headers['x-test-call'] === tag);
    assert.ok(received, `the upstream saw call ${tag} (status ${response.status}: ${response.body})`);
    return { response, received };
  }

  it('sends exactly the agent headers that are end-to-end, minus credentials and cookies, plus forwarding headers', async () => {
    const body = rpc(7, 'tools/call', { name: 'echo', arguments: { text: 'hi' } });
    const headers: OutgoingHttpHeaders = {
      ...MCP_POST_HEADERS,
      'mcp-session-id': 'session-1',
      'mcp-protocol-version': '2025-11-25',
      'mcp-method': 'tools/call',
      'mcp-name': 'echo',
      authorization: 'Bearer agent-token-must-not-pass',
      cookie: 'gw_session=abc; other=def',
      'proxy-authorization': 'Basic cHJveHk6c2VjcmV0',
      connection: 'keep-alive, x-hop-only',
      'x-hop-only': 'listed in Connection, so hop-by-hop',
      'keep-alive': 'timeout=5',
      te: 'trailers',
      upgrade: 'h2c',
      'proxy-connection': 'keep-alive',
      origin: gateway.url.origin,
    };
    const { response, received } = await call('plain', { method: 'POST', headers, body });

    assert.equal(response.status, 200);
    assert.deepEqual(Object.keys(received.headers).sort(), [
      'accept', 'connection', 'content-length', 'content-type', 'host', 'mcp-method', 'mcp-name', 'mcp-protocol-version',
      'mcp-session-id', 'traceparent', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-test-call',
    ]);
    // The Connection header upstream is undici's own for its hop, not the agent's.
    assert.equal(received.headers.connection, 'keep-alive');
    assert.equal(received.headers.host, upstream.url.host);
    assert.equal(received.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(received.headers['x-forwarded-proto'], 'http');
    assert.equal(received.headers['x-forwarded-host'], gateway.url.host);
    assert.match(String(received.headers.traceparent), TRACEPARENT);
    assert.equal(received.headers.accept, MCP_POST_HEADERS.accept);
    assert.equal(received.body.toString('utf8'), body, 'the body is forwarded byte for byte');

    // An upgrade request is answered as a plain request: the upgrade is not passed on.
    const upgrade = await call('plain', { method: 'POST', headers: { ...MCP_POST_HEADERS, connection: 'Upgrade', upgrade: 'websocket' }, body: rpc(8, 'ping') });
    assert.equal(upgrade.response.status, 200);
    assert.equal(upgrade.received.headers.upgrade, undefined);
    assert.equal(upgrade.received.headers.connection, 'keep-alive');
  });

  it('keeps a valid incoming traceparent (with its tracestate) and replaces an invalid one', async () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const kept = await call('plain', { method: 'POST', headers: { ...MCP_POST_HEADERS, traceparent, tracestate: 'vendor=1' }, body: rpc(1, 'ping') });
    assert.equal(kept.received.headers.traceparent, traceparent);
    assert.equal(kept.received.headers.tracestate, 'vendor=1');

    const replaced = await call('plain', { method: 'POST', headers: { ...MCP_POST_HEADERS, traceparent: 'garbage', tracestate: 'vendor=1' }, body: rpc(2, 'ping') });
    assert.match(String(replaced.received.headers.traceparent), TRACEPARENT);
    assert.equal(replaced.received.headers.tracestate, undefined, 'a tracestate without its traceparent is dropped');
  });

  it('adds the configured static credential instead of the agent\'s Authorization (env: and file: references)', async () => {
    const agentAuth = { ...MCP_POST_HEADERS, authorization: 'Bearer agent-token-must-not-pass' };

    const fromEnv = await call('envtoken', { method: 'POST', headers: agentAuth, body: rpc(1, 'ping') });
    assert.equal(fromEnv.received.headers.authorization, 'Bearer tok-from-env-123', 'a bare token is sent as a Bearer token');

    const fromFile = await call('filekey', { method: 'POST', headers: agentAuth, body: rpc(2, 'ping') });
    assert.equal(fromFile.received.headers['x-api-key'], 'key-from-file', 'the file\'s trailing newline is dropped');
    assert.equal(fromFile.received.headers.authorization, undefined);

    const withScheme = await call('filebasic', { method: 'POST', headers: agentAuth, body: rpc(3, 'ping') });
    assert.equal(withScheme.received.headers.authorization, 'Basic dXNlcjpwYXNz', 'a value with a scheme is sent as is');

    const none = await call('plain', { method: 'POST', headers: agentAuth, body: rpc(4, 'ping') });
    assert.equal(none.received.headers.authorization, undefined);
  });

  it('carries every MCP protocol version and both session-header casings unchanged, on POST, GET and DELETE', async () => {
    for (const version of PROTOCOL_VERSIONS) {
      for (const sessionHeader of ['Mcp-Session-Id', 'mcp-session-id']) {
        const sessionId = `sess-${version}-${sessionHeader}`;
        const headers = { ...MCP_POST_HEADERS, 'MCP-Protocol-Version': version, [sessionHeader]: sessionId };
        const post = await call('plain', { method: 'POST', headers, body: rpc(`${version}-${sessionHeader}`, 'tools/list') });
        assert.equal(post.response.status, 200);
        assert.equal(post.received.headers['mcp-protocol-version'], version);
        assert.equal(post.received.headers['mcp-session-id'], sessionId);
        assert.equal(post.response.headers['mcp-session-id'], sessionId, 'the upstream\'s session header reaches the agent');
        assert.deepEqual(JSON.parse(post.response.body), { jsonrpc: '2.0', id: `${version}-${sessionHeader}`, result: { ok: true } });

        const get = await call('plain', { method: 'GET', headers: { accept: 'text/event-stream', 'mcp-protocol-version': version, [sessionHeader]: sessionId, 'Last-Event-ID': `${version}/42` } });
        assert.equal(get.response.status, 200);
        assert.equal(get.received.method, 'GET');
        assert.equal(get.received.headers['last-event-id'], `${version}/42`);
        assert.equal(get.received.headers['mcp-protocol-version'], version);
        assert.equal(get.received.headers['mcp-session-id'], sessionId);

        const del = await call('plain', { method: 'DELETE', headers: { 'mcp-protocol-version': version, [sessionHeader]: sessionId } });
        assert.equal(del.response.status, 200);
        assert.equal(del.received.method, 'DELETE');
        assert.equal(del.received.headers['mcp-session-id'], sessionId);
      }
    }
  });

  it('carries Mcp-Method and Mcp-Name unchanged', async () => {
    const { received } = await call('plain', {
      method: 'POST',
      headers: { ...MCP_POST_HEADERS, 'Mcp-Method': 'tools/call', 'Mcp-Name': 'get_weather v2' },
      body: rpc(1, 'tools/call', { name: 'x' }),
    });
    assert.equal(received.headers['mcp-method'], 'tools/call');
    assert.equal(received.headers['mcp-name'], 'get_weather v2');
  });

  it('never passes the upstream\'s Set-Cookie to the agent, and marks SSE responses unbufferable', async () => {
    const json = await call('plain', { method: 'POST', headers: MCP_POST_HEADERS, body: rpc(1, 'ping') });
    assert.equal(json.response.headers['set-cookie'], undefined);
    assert.equal(json.response.headers['x-accel-buffering'], undefined, 'only SSE responses need it');

    const sse = await call('plain', { method: 'GET', headers: { accept: 'text/event-stream', 'mcp-session-id': 's' } });
    assert.match(String(sse.response.headers['content-type']), /^text\/event-stream/);
    assert.equal(sse.response.headers['x-accel-buffering'], 'no');
    assert.equal(sse.response.headers['set-cookie'], undefined);
    assert.match(sse.response.body, /notifications\/message/);
  });

  it('believes X-Forwarded-* only from a configured trusted proxy', async () => {
    const claimed = { ...MCP_POST_HEADERS, 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'mcp.example.com' };

    const direct = await call('plain', { method: 'POST', headers: claimed, body: rpc(1, 'ping'), localAddress: '127.0.0.1' });
    assert.equal(direct.received.headers['x-forwarded-for'], '127.0.0.1', 'an untrusted peer cannot claim another address');
    assert.equal(direct.received.headers['x-forwarded-proto'], 'http');
    assert.equal(direct.received.headers['x-forwarded-host'], gateway.url.host);

    const viaProxy = await call('plain', { method: 'POST', headers: claimed, body: rpc(2, 'ping'), localAddress: '127.0.0.2' });
    assert.equal(viaProxy.received.headers['x-forwarded-for'], '203.0.113.9');
    assert.equal(viaProxy.received.headers['x-forwarded-proto'], 'https');
    assert.equal(viaProxy.received.headers['x-forwarded-host'], 'mcp.example.com');

    // A chain: the right-most address that is not a trusted proxy is the client.
    const chain = await call('plain', {
      method: 'POST',
      headers: { ...MCP_POST_HEADERS, 'x-forwarded-for': '198.51.100.1, 203.0.113.9, 127.0.0.2' },
      body: rpc(3, 'ping'),
      localAddress: '127.0.0.2',
    });
    assert.equal(chain.received.headers['x-forwarded-for'], '203.0.113.9');

    const logged = gateway.logs.records().filter((r) => r.msg === 'request').map((r) => r.ip);
    assert.ok(logged.includes('203.0.113.9'), 'the access log names the client the trusted proxy vouched for');
  });

  it('a forged X-Forwarded-For of garbage passed on by a trusted proxy never becomes the client address', async () => {
    const garbage = ['<script>alert(1)</script>', 'unknown', 'x'.repeat(2000), '999.1.1.1', '203.0.113.9 OR 1=1', '_hidden'];
    for (const [i, forged] of garbage.entries()) {
      const { received } = await call('plain', {
        method: 'POST',
        headers: { ...MCP_POST_HEADERS, 'x-forwarded-for': forged },
        body: rpc(100 + i, 'ping'),
        localAddress: '127.0.0.2',
      });
      // The walk stops at the garbage: the client is the last address a trusted hop gave (the proxy itself).
      assert.equal(received.headers['x-forwarded-for'], '127.0.0.2', `forged ${JSON.stringify(forged.slice(0, 40))}`);
    }
    // Garbage further left is not reached; a trusted hop's garbage stops at the address to its right.
    const left = await call('plain', {
      method: 'POST',
      headers: { ...MCP_POST_HEADERS, 'x-forwarded-for': 'garbage, 203.0.113.7' },
      body: rpc(120, 'ping'),
      localAddress: '127.0.0.2',
    });
    assert.equal(left.received.headers['x-forwarded-for'], '203.0.113.7');
    const behindTrusted = await call('plain', {
      method: 'POST',
      headers: { ...MCP_POST_HEADERS, 'x-forwarded-for': 'garbage, 127.0.0.2' },
      body: rpc(121, 'ping'),
      localAddress: '127.0.0.2',
    });
    assert.equal(behindTrusted.received.headers['x-forwarded-for'], '127.0.0.2');
    // A hop with a port, as some proxies write it, is the address without the port.
    const withPort = await call('plain', {
      method: 'POST',
      headers: { ...MCP_POST_HEADERS, 'x-forwarded-for': '203.0.113.8:5678' },
      body: rpc(122, 'ping'),
      localAddress: '127.0.0.2',
    });
    assert.equal(withPort.received.headers['x-forwarded-for'], '203.0.113.8');

    const logged = gateway.logs.records().filter((r) => r.msg === 'request').map((r) => String(r.ip));
    for (const forged of garbage) assert.ok(!logged.includes(forged), 'no forged text in the access log as the client address');
  });
});
