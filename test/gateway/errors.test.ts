/**
 * Bad input and failing upstreams (issue 3): each gets the right status and a JSON-RPC error
 * carrying the request's id where there is one; nothing crashes the process; and the log lines
 * written meanwhile hold no credential, cookie, secret, full session id or query string.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { freePort, startGateway, type TestGateway } from '../support/gateway.ts';
import { startRawUpstream, answerLikeMcp, type RawUpstream } from '../support/mcp-upstream.ts';
import { MCP_POST_HEADERS, rpc, send } from './http-client.ts';

const STATIC_SECRET = 'static-secret-value-3f9a';
const AGENT_TOKEN = 'agent-bearer-token-77c1';
const COOKIE_SECRET = 'cookie-secret-5e2b';
const QUERY_SECRET = 'query-secret-0d4e';
const SESSION_ID = 'f00dfeed-session-id-with-a-long-secret-tail';

describe('errors through the gateway', () => {
  let upstream: RawUpstream;
  let gateway: TestGateway;

  before(async () => {
    upstream = await startRawUpstream(async (req, res, recorded) => {
      switch (new URL(req.url!, 'http://x').pathname) {
        case '/slow/mcp':
          return; // never answers: the gateway's upstreamTimeout must fire
        case '/auth/mcp':
          res.writeHead(401, {
            'www-authenticate': 'Bearer resource_metadata="https://upstream.example/.well-known/oauth-protected-resource"',
            'content-type': 'application/json',
          });
          res.end('{"error":"invalid_token","hint":"upstream-only-detail"}');
          return;
        case '/cut/mcp':
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('id: 1\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}\n\n');
          setTimeout(() => res.socket?.destroy(), 50); // the upstream dies mid-stream
          return;
        default:
          return answerLikeMcp(req, res, recorded);
      }
    });
    const at = (path: string) => new URL(path, upstream.url);
    gateway = await startGateway({
      upstreams: [
        { name: 'ok', url: at('/ok/mcp'), auth: { mode: 'static', header: 'X-Api-Key', value: 'env:STATIC_SECRET' } },
        { name: 'down', url: `http://127.0.0.1:${await freePort()}/mcp` },
        { name: 'slow', url: at('/slow/mcp') },
        { name: 'needsauth', url: at('/auth/mcp') },
        { name: 'cut', url: at('/cut/mcp') },
      ],
      server: { maxBodyBytes: 1024, upstreamTimeout: '300ms', allowedOrigins: ['https://agent.example'] },
      env: { STATIC_SECRET },
    });
  });

  after(async () => {
    await gateway.close();
    await upstream.close();
  });

  const post = (name: string, body: string, headers: Record<string, string> = {}) =>
    send(gateway.mcpUrl(name), { method: 'POST', headers: { ...MCP_POST_HEADERS, ...headers }, body });
  const rpcError = (body: string) => JSON.parse(body) as { jsonrpc: string; id: unknown; error: { code: number; message: string } };

  it('answers an unknown upstream with 404 and a JSON-RPC error', async () => {
    const res = await post('nope', rpc(1, 'tools/list'));
    assert.equal(res.status, 404);
    const body = rpcError(res.body);
    assert.equal(body.jsonrpc, '2.0');
    assert.equal(body.error.code, -32601);
    assert.match(body.error.message, /nope/);
  });

  it('refuses a body over maxBodyBytes with 413, by Content-Length and while reading a chunked body', async () => {
    const big = rpc(1, 'tools/call', { name: 'echo', arguments: { text: 'x'.repeat(2000) } });
    const before = upstream.requests.length;

    const declared = await post('ok', big);
    assert.equal(declared.status, 413);
    assert.equal(rpcError(declared.body).error.code, -32600);

    const chunked = await new Promise<number>((resolve, reject) => {
      const req = request(gateway.mcpUrl('ok'), { method: 'POST', headers: { ...MCP_POST_HEADERS, 'transfer-encoding': 'chunked' }, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.write(big.slice(0, 800));
      setTimeout(() => req.end(big.slice(800)), 20);
    });
    assert.equal(chunked, 413);
    assert.equal(upstream.requests.length, before, 'nothing reached the upstream');
  });

  it('refuses a foreign Origin with 403; an allowed one passes, with CORS headers and a preflight', async () => {
    const evil = await post('ok', rpc(1, 'ping'), { origin: 'https://evil.example' });
    assert.equal(evil.status, 403);
    assert.equal(rpcError(evil.body).error.code, -32600);
    assert.equal(evil.headers['access-control-allow-origin'], undefined);

    const allowed = await post('ok', rpc(2, 'ping'), { origin: 'https://agent.example' });
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers['access-control-allow-origin'], 'https://agent.example');
    assert.match(String(allowed.headers['access-control-expose-headers']), /mcp-session-id/);

    const ours = await post('ok', rpc(3, 'ping'), { origin: gateway.url.origin });
    assert.equal(ours.status, 200, 'the gateway\'s own origin is always allowed');

    const preflight = await send(gateway.mcpUrl('ok'), {
      method: 'OPTIONS',
      headers: { origin: 'https://agent.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'mcp-session-id, content-type' },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers['access-control-allow-origin'], 'https://agent.example');
    assert.match(String(preflight.headers['access-control-allow-methods']), /POST/);
    assert.match(String(preflight.headers['access-control-allow-headers']), /mcp-session-id/);

    const evilPreflight = await send(gateway.mcpUrl('ok'), { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    assert.equal(evilPreflight.status, 403);
  });

  it('answers malformed JSON with 400 and a JSON-RPC parse error whose id is null', async () => {
    const res = await post('ok', '{"jsonrpc":"2.0","id":4,"method":');
    assert.equal(res.status, 400);
    const body = rpcError(res.body);
    assert.equal(body.id, null);
    assert.equal(body.error.code, -32700);
  });

  it('answers an upstream that refuses connections with 502 carrying the request id', async () => {
    const res = await post('down', rpc('req-7', 'tools/list'));
    assert.equal(res.status, 502);
    const body = rpcError(res.body);
    assert.equal(body.id, 'req-7');
    assert.equal(body.error.code, -32000);

    // The log line of the 5xx names what failed, its code and its whole cause chain (nothing blanked or folded).
    const reqId = res.headers['x-request-id'];
    const line = gateway.logs.records().find((r) => r.msg === 'request failed' && r.reqId === reqId);
    assert.ok(line, 'the 5xx was logged');
    assert.equal(line.err, undefined);
    const failure = line.failure as { name: string; message: string; errorCode: string; cause: { name: string; message: string; cause: { errorCode?: string } } };
    assert.equal(failure.name, 'HttpError');
    assert.equal(failure.message, 'upstream "down" is unreachable');
    assert.equal(failure.errorCode, 'bad_gateway');
    assert.equal(failure.cause.name, 'UpstreamError');
    assert.equal(failure.cause.message, 'upstream request failed: unreachable');
    assert.equal(failure.cause.cause.errorCode, 'ECONNREFUSED', 'the transport error code survives the redaction of *.code');
  });

  it('answers an upstream that sends no headers within upstreamTimeout with 504 carrying the request id', async () => {
    const res = await post('slow', rpc(8, 'tools/call', { name: 'x' }));
    assert.equal(res.status, 504);
    const body = rpcError(res.body);
    assert.equal(body.id, 8);
    assert.equal(body.error.code, -32001);
  });

  it('turns an upstream 401 in mode none into 502, without passing on the upstream\'s challenge', async () => {
    const res = await post('needsauth', rpc(9, 'tools/list'));
    assert.equal(res.status, 502);
    assert.equal(res.headers['www-authenticate'], undefined, 'the agent must not be sent to the upstream\'s authorization server');
    assert.equal(rpcError(res.body).id, 9);
    assert.doesNotMatch(res.body, /upstream\.example|upstream-only-detail/);
  });

  it('ends the agent\'s stream cleanly when the upstream cuts it mid-way', async () => {
    const { complete, body } = await new Promise<{ complete: boolean; body: string }>((resolve, reject) => {
      const req = request(gateway.mcpUrl('cut'), { headers: { accept: 'text/event-stream', 'mcp-session-id': 's' }, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ complete: res.complete, body }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
    assert.ok(complete, 'the response ended with a proper terminating chunk, not a reset');
    assert.match(body, /^id: 1\n/, 'the event sent before the cut arrived whole');
    const line = gateway.logs.records().find((r) => r.msg === 'request' && r.upstream === 'cut');
    assert.equal(line?.cut, true, 'the access-log line says the upstream cut the stream');
    const metrics = await (await fetch(new URL('/metrics', gateway.url))).text();
    assert.match(metrics, /mcpgate_upstream_errors_total\{[^}]*upstream="cut"[^}]*\} 1/);
  });

  it('survives all of it, and logged no secret, cookie, full session id or query string', async () => {
    // One more request carrying everything that must never be logged.
    const res = await send(new URL(`${gateway.mcpUrl('ok').pathname}?code=${QUERY_SECRET}&state=${QUERY_SECRET}`, gateway.url), {
      method: 'POST',
      headers: {
        ...MCP_POST_HEADERS,
        authorization: `Bearer ${AGENT_TOKEN}`,
        cookie: `sid=${COOKIE_SECRET}`,
        'mcp-session-id': SESSION_ID,
      },
      body: rpc(10, 'tools/list'),
    });
    assert.equal(res.status, 200);
    const received = upstream.requests.at(-1)!;
    assert.equal(received.headers['x-api-key'], STATIC_SECRET, 'the static secret was used (so it was in the process to leak)');
    assert.equal(received.url, `/ok/mcp?code=${QUERY_SECRET}&state=${QUERY_SECRET}`, 'the query is forwarded as is');

    const health = await fetch(new URL('/healthz', gateway.url));
    assert.equal(health.status, 200);

    const logs = gateway.logs.text();
    assert.ok(gateway.logs.records().some((r) => r.msg === 'request' && r.status === 504), 'the log lines were captured');
    for (const secret of [STATIC_SECRET, AGENT_TOKEN, COOKIE_SECRET, QUERY_SECRET, SESSION_ID, SESSION_ID.slice(0, 9)]) {
      assert.ok(!logs.includes(secret), `the logs do not contain ${secret}`);
    }
    assert.ok(!/[?&](code|state)=/.test(logs), 'no query string is logged');
    const line = gateway.logs.records().find((r) => r.msg === 'request' && r.rpc === 'tools/list' && r.upstream === 'ok' && r.status === 200);
    assert.equal(line?.session, SESSION_ID.slice(0, 8), 'session ids are cut to 8 characters');
  });
});
