/**
 * OpenTelemetry traces (issue 13): with `observability.otlp.endpoint` the gateway sends OTLP/HTTP
 * JSON spans to a real collector endpoint (a node:http server here that decodes what it gets),
 * continuing the agent’s W3C traceparent (with a `refresh idp` child span when the request refreshes
 * the IdP token at a real development IdP); without it nothing is sent.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { startDevIdp } from '../support/idp.ts';
import { startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';
import { MCP_POST_HEADERS, rpc, send } from '../gateway/http-client.ts';
import { createBrowser, formAction } from '../upstream-oauth/browser.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createTracer } from '../../src/observability/tracing.ts';

const STATIC_SECRET = 'static-secret-value-9c1e';
const AGENT_TOKEN = 'agent-bearer-token-44d0';
const AGENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const AGENT_SPAN = '00f067aa0ba902b7';

interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Array<{ key: string; value: Record<string, unknown> }>;
  status: { code: number };
}

/**
 * A user's sign-in as an agent performs it, without a browser engine: DCR, authorize with PKCE,
 * the development IdP's login form, our consent page, the code exchange. Our access token for `resource`.
 */
async function signIn(base: string, resource: string, user: { login: string; password: string }): Promise<string> {
  const redirectUri = 'http://127.0.0.1:9/callback';
  const registered = await fetch(`${base}/oauth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' }),
  });
  assert.equal(registered.status, 201);
  const { client_id: clientId } = (await registered.json()) as { client_id: string };
  const verifier = randomBytes(32).toString('base64url');
  const query = new URLSearchParams({
    client_id: clientId,
    redirect_uri: redirectUri,
    response_type: 'code',
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    state: 'st',
    scope: 'mcp',
    resource,
  });
  const browser = createBrowser();
  const backAtAgent = (url: URL) => url.href.startsWith(redirectUri);
  let page = await browser.open(`${base}/oauth/authorize?${query}`, { stopAt: backAtAgent });
  page = await browser.submit(formAction(page, /\/login$/), user, { stopAt: backAtAgent });
  if (page.status === 200 && page.body.includes('name="consent_id"')) {
    const fields = Object.fromEntries([...page.body.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)].map((m) => [m[1]!, m[2]!.replace(/&amp;/g, '&')]));
    page = await browser.submit(formAction(page, /\/oauth\/consent/), { ...fields, decision: 'approve' }, { stopAt: backAtAgent });
  }
  const code = new URL(String(page.headers.location)).searchParams.get('code');
  assert.ok(code, `an authorization code (last page ${page.url}, ${page.status})`);
  const token = await fetch(`${base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', client_id: clientId, code, redirect_uri: redirectUri, code_verifier: verifier, resource }).toString(),
  });
  assert.equal(token.status, 200);
  return ((await token.json()) as { access_token: string }).access_token;
}

/** A collector: accepts POST /v1/traces (OTLP/HTTP JSON) and keeps every span and resource. */
async function startCollector() {
  const spans: ReceivedSpan[] = [];
  const resources: unknown[] = [];
  let posts = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      posts++;
      if (req.method !== 'POST' || req.url !== '/v1/traces' || req.headers['content-type'] !== 'application/json') {
        res.writeHead(400).end();
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        resourceSpans: Array<{ resource: unknown; scopeSpans: Array<{ scope: { name: string }; spans: ReceivedSpan[] }> }>;
      };
      for (const rs of body.resourceSpans) {
        resources.push(rs.resource);
        for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    resources,
    posts: () => posts,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('OpenTelemetry traces', () => {
  let upstream: RawUpstream;
  let collector: Awaited<ReturnType<typeof startCollector>>;

  before(async () => {
    upstream = await startRawUpstream();
    collector = await startCollector();
  });
  after(async () => {
    await upstream.close();
    await collector.close();
  });

  it('exports request, authentication, credential and upstream spans in the agent’s trace', async () => {
    const gateway: TestGateway = await startGateway({
      upstreams: [{ name: 'tools', url: upstream.url, auth: { mode: 'static', value: 'env:STATIC_SECRET' } }],
      env: { STATIC_SECRET },
      observability: { otlp: { endpoint: collector.endpoint, serviceName: 'gateway-under-test' } },
    });
    const before = upstream.requests.length;
    let response;
    try {
      response = await send(gateway.mcpUrl('tools'), {
        method: 'POST',
        headers: { ...MCP_POST_HEADERS, authorization: `Bearer ${AGENT_TOKEN}`, traceparent: `00-${AGENT_TRACE}-${AGENT_SPAN}-01` },
        body: rpc(1, 'tools/call', { name: 'echo', arguments: {} }),
      });
    } finally {
      await gateway.close(); // flushes the spans
    }
    assert.equal(response.status, 200);

    const spans = collector.spans.filter((s) => s.traceId === AGENT_TRACE);
    assert.ok(spans.length >= 4, `spans of the agent's trace: ${JSON.stringify(collector.spans.map((s) => s.name))}`);
    assert.deepEqual(collector.resources[0], { attributes: [{ key: 'service.name', value: { stringValue: 'gateway-under-test' } }] });

    const requestSpan = spans.find((s) => s.name === 'POST /{upstream}/mcp');
    assert.ok(requestSpan, 'a request span');
    assert.equal(requestSpan.parentSpanId, AGENT_SPAN, "the request span's parent is the agent's span");
    assert.equal(requestSpan.kind, 2, 'SERVER');
    const attrs = Object.fromEntries(requestSpan.attributes.map((a) => [a.key, a.value]));
    assert.deepEqual(attrs['http.response.status_code'], { intValue: '200' });
    assert.deepEqual(attrs['mcpgate.upstream'], { stringValue: 'tools' });
    assert.deepEqual(attrs['mcp.method.name'], { stringValue: 'tools/call' });
    assert.deepEqual(attrs['gen_ai.tool.name'], { stringValue: 'echo' });

    for (const name of ['authenticate', 'credentials', 'upstream']) {
      const child = spans.find((s) => s.name === name);
      assert.ok(child, `a ${name} span`);
      assert.equal(child.parentSpanId, requestSpan.spanId, `${name} is a child of the request span`);
      assert.match(child.spanId, /^[\da-f]{16}$/);
      assert.ok(BigInt(child.startTimeUnixNano) >= BigInt(requestSpan.startTimeUnixNano));
    }
    const upstreamSpan = spans.find((s) => s.name === 'upstream')!;
    assert.equal(upstreamSpan.kind, 3, 'CLIENT');

    const received = upstream.requests.slice(before);
    assert.equal(received.length, 1);
    assert.equal(received[0]!.headers.traceparent, `00-${AGENT_TRACE}-${upstreamSpan.spanId}-01`, "the upstream's parent is the upstream span");
    assert.equal(received[0]!.headers.authorization, `Bearer ${STATIC_SECRET}`, 'the credential was in the process to leak');

    const exported = JSON.stringify(collector.spans);
    assert.ok(!exported.includes(AGENT_TOKEN), 'no agent token in any span');
    assert.ok(!exported.includes(STATIC_SECRET), 'no upstream credential in any span');
  });

  it('a request that refreshes the IdP token has a `refresh idp` span under its credential span', async () => {
    // The IdP's access tokens live 60 s and the upstream refreshes them 120 s before they expire:
    // the first request after the sign-in finds the token due and refreshes it at the real IdP.
    const idp = await startDevIdp({ accessTokenTtlSeconds: 60 });
    const gateway = await startGateway({
      idp,
      upstreams: [{ name: 'kube', url: upstream.url, auth: { mode: 'idp', refreshMargin: '120s' } }],
      observability: { otlp: { endpoint: collector.endpoint } },
    });
    const trace = randomBytes(16).toString('hex');
    const before = upstream.requests.length;
    let response;
    let refreshes = 0;
    try {
      const user = idp.users.find((u) => u.login === 'alice')!;
      const accessToken = await signIn(gateway.url.origin, gateway.mcpUrl('kube').href, { login: user.login, password: user.password });
      const refreshesBefore = idp.refreshCount();
      response = await send(gateway.mcpUrl('kube'), {
        method: 'POST',
        headers: { ...MCP_POST_HEADERS, authorization: `Bearer ${accessToken}`, traceparent: `00-${trace}-${AGENT_SPAN}-01` },
        body: rpc(3, 'tools/list'),
      });
      refreshes = idp.refreshCount() - refreshesBefore;
    } finally {
      await gateway.close(); // flushes the spans
      await idp.close();
    }
    assert.equal(response.status, 200);
    assert.equal(refreshes, 1, 'the request refreshed the IdP token at the IdP');
    assert.equal(upstream.requests.length - before, 1);

    const spans = collector.spans.filter((s) => s.traceId === trace);
    const names = JSON.stringify(spans.map((s) => s.name));
    const requestSpan = spans.find((s) => s.name === 'POST /{upstream}/mcp');
    assert.ok(requestSpan, `a request span: ${names}`);
    assert.equal(requestSpan.parentSpanId, AGENT_SPAN);
    const credentials = spans.find((s) => s.name === 'credentials' && s.parentSpanId === requestSpan.spanId);
    assert.ok(credentials, `a credentials span under the request: ${names}`);
    const refresh = spans.filter((s) => s.name === 'refresh idp');
    assert.equal(refresh.length, 1, `one refresh span: ${names}`);
    assert.equal(refresh[0]!.parentSpanId, credentials.spanId, 'the refresh is a child of the credential span');
    assert.notEqual(refresh[0]!.status.code, 2, 'the refresh succeeded (not ERROR)');
    assert.ok(BigInt(refresh[0]!.startTimeUnixNano) >= BigInt(credentials.startTimeUnixNano));
    assert.ok(BigInt(refresh[0]!.endTimeUnixNano) <= BigInt(credentials.endTimeUnixNano));
    const sent = String(upstream.requests.at(-1)!.headers.authorization).replace(/^Bearer /, '');
    assert.ok(!JSON.stringify(collector.spans).includes(sent), 'no IdP token in any span');
  });

  it('without observability.otlp nothing is sent and the gateway works', async () => {
    const posts = collector.posts();
    const gateway = await startGateway({ upstreams: [{ name: 'tools', url: upstream.url }] });
    const before = upstream.requests.length;
    let response;
    try {
      response = await send(gateway.mcpUrl('tools'), {
        method: 'POST',
        headers: { ...MCP_POST_HEADERS, traceparent: `00-${AGENT_TRACE}-${AGENT_SPAN}-01` },
        body: rpc(2, 'tools/list'),
      });
    } finally {
      await gateway.close();
    }
    assert.equal(response.status, 200);
    assert.equal(collector.posts(), posts, 'nothing reached the collector');
    // Untraced, the agent's traceparent passes upstream as it was.
    assert.equal(upstream.requests.slice(before)[0]!.headers.traceparent, `00-${AGENT_TRACE}-${AGENT_SPAN}-01`);
  });

  it('refuses an http endpoint outside devMode', async () => {
    await assert.rejects(
      startGateway({
        upstreams: [{ name: 'tools', url: 'https://upstream.example/mcp' }],
        server: { devMode: false, publicUrl: 'https://gw.example' },
        observability: { otlp: { endpoint: 'http://collector.example:4318' } },
      }),
      /observability\.otlp\.endpoint.*https/s,
    );
  });
});

describe('the exporter', () => {
  const silent = createLogger({ level: 'silent' });

  it('nests spans through async code, batches, and drops beyond the queue bound', async () => {
    const collector = await startCollector();
    try {
      const tracer = createTracer({ endpoint: `${collector.endpoint}/`, logger: silent, maxBatch: 4, maxQueue: 6, flushIntervalMs: 60_000 });
      await tracer.trace('outer', async (outer) => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        await tracer.trace('inner', async (inner) => assert.equal(inner.parentSpanId, outer.spanId));
      });
      await assert.rejects(tracer.trace('failing', async () => Promise.reject(new TypeError('x'))));
      // 3 queued so far; 10 more: the 4th completes a batch (sending), 2 more fill the bound of 6 (queued + sending), 7 are dropped.
      for (let i = 0; i < 10; i++) tracer.start(`s${i}`).end();
      await tracer.shutdown();
      assert.equal(collector.spans.length + tracer.stats().dropped, 13);
      assert.equal(tracer.stats().dropped, 7);
      assert.ok(tracer.stats().dropped > 0, 'spans past the bound are dropped and counted');
      assert.ok(collector.posts() >= 2, 'sent in batches');
      assert.ok(collector.spans.every((s) => s.spanId.length === 16 && s.traceId.length === 32));
      const failing = collector.spans.find((s) => s.name === 'failing')!;
      assert.equal(failing.status.code, 2, 'a thrown error marks the span ERROR');
      assert.equal(collector.spans.find((s) => s.name === 'inner')!.traceId, collector.spans.find((s) => s.name === 'outer')!.traceId);
    } finally {
      await collector.close();
    }
  });

  it('counts a failed export and never throws', async () => {
    const tracer = createTracer({ endpoint: 'http://127.0.0.1:9', logger: silent });
    await tracer.trace('lost', async () => 'fine');
    await tracer.shutdown();
    assert.equal(tracer.stats().exportFailures, 1);
    assert.equal(tracer.stats().exported, 0);
  });
});
