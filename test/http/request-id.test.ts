/**
 * Every response of the front door carries `X-Request-Id` (the agent's own when it is a sane
 * token, a new one otherwise), whichever way the handler wrote its head: a proxied answer, a
 * stream, an error, a preflight, a response with headers set ahead (CORS), the ops routes.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';
import { MCP_POST_HEADERS, rpc, send } from '../gateway/http-client.ts';

const UUID = /^[\da-f]{8}-[\da-f]{4}-[\da-f]{4}-[\da-f]{4}-[\da-f]{12}$/;

describe('X-Request-Id on every response', () => {
  let upstream: RawUpstream;
  let gateway: TestGateway;

  before(async () => {
    upstream = await startRawUpstream();
    gateway = await startGateway({
      upstreams: [{ name: 'up', url: new URL('/mcp', upstream.url) }],
      server: { allowedOrigins: ['https://agent.example'] },
    });
  });
  after(async () => {
    await gateway.close();
    await upstream.close();
  });

  it('echoes a sane id the agent sent, and makes one up for an unusable id', async () => {
    const echoed = await send(gateway.mcpUrl('up'), { method: 'POST', headers: { ...MCP_POST_HEADERS, 'x-request-id': 'agent-id.42' }, body: rpc(1, 'ping') });
    assert.equal(echoed.status, 200);
    assert.equal(echoed.headers['x-request-id'], 'agent-id.42');
    const replaced = await send(gateway.mcpUrl('up'), { method: 'POST', headers: { ...MCP_POST_HEADERS, 'x-request-id': 'has spaces' }, body: rpc(2, 'ping') });
    assert.match(String(replaced.headers['x-request-id']), UUID);
  });

  it('carries one on proxied answers, streams, errors, preflights, CORS answers and ops routes', async () => {
    const origin = 'https://agent.example';
    const answers = {
      'POST proxied': await send(gateway.mcpUrl('up'), { method: 'POST', headers: MCP_POST_HEADERS, body: rpc(3, 'ping') }),
      'POST with CORS headers set ahead': await send(gateway.mcpUrl('up'), { method: 'POST', headers: { ...MCP_POST_HEADERS, origin }, body: rpc(4, 'ping') }),
      'GET stream': await send(gateway.mcpUrl('up'), { headers: { accept: 'text/event-stream' } }),
      'JSON-RPC parse error': await send(gateway.mcpUrl('up'), { method: 'POST', headers: MCP_POST_HEADERS, body: '{not json' }),
      'unknown upstream': await send(gateway.mcpUrl('nope'), { method: 'POST', headers: MCP_POST_HEADERS, body: rpc(5, 'ping') }),
      'method not allowed': await send(gateway.mcpUrl('up'), { method: 'PUT' }),
      preflight: await send(gateway.mcpUrl('up'), { method: 'OPTIONS', headers: { origin } }),
      'no route': await send(new URL('/nowhere', gateway.url)),
      healthz: await send(new URL('/healthz', gateway.url)),
    };
    const ids = new Set<string>();
    for (const [what, answer] of Object.entries(answers)) {
      const id = answer.headers['x-request-id'];
      assert.equal(typeof id, 'string', `${what} (${answer.status}) has no x-request-id`);
      assert.match(String(id), UUID, what);
      ids.add(String(id));
    }
    assert.equal(ids.size, Object.keys(answers).length, 'each request gets its own id');
    assert.equal(answers['POST with CORS headers set ahead'].headers['access-control-allow-origin'], origin);
    assert.equal(answers['JSON-RPC parse error'].status, 400);
    assert.equal(answers['method not allowed'].status, 405);
  });
});
