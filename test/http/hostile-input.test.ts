/**
 * The robustness sweep: every route of the whole app (`createApp` with login, an upstream in mode
 * `oauth` in front of a real MCP server with its own authorization server, and one in mode `none`
 * so hostile requests with a valid token are forwarded) gets a table of hostile requests: wrong
 * methods, garbage and duplicated parameters, invalid percent-encoding, huge queries and bodies,
 * wrong content types, JSON that is not an object or is nested 10 000 deep, garbage
 * `Authorization` and `Cookie` headers, forged Host, path traversal, odd upstream names, the same
 * next to a real client id and a valid login cookie, and a burst of them at once; on a raw
 * socket, malformed request lines, repeated headers, CONNECT/Upgrade/Expect, clients that hang
 * up mid-body, and one that stalls mid-headers.
 *
 * Each answer must be a clear refusal: below 500, a body of the route's kind (RFC 6749 JSON with
 * `error`, a JSON-RPC error on the MCP path, an HTML page with escaped reflections or a redirect
 * on browser endpoints), the server answers /healthz afterwards, /metrics gains no client-chosen
 * label, and at the end the log holds no token, secret, code or cookie sent and no error line.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { createApp, type App } from '../../src/app.ts';
import { createCookieCodec, deriveCookieKey, loginCookie } from '../../src/authserver/login/cookies.ts';
import { generateSigningKeyPem, generateStoreKey } from '../../src/authserver/tokens/keys.ts';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { login, refusingIdp, registerClient, type AuthGateway } from '../authserver/fixture.ts';
import { send, type RawResponse } from '../gateway/http-client.ts';
import { freePort } from '../support/gateway.ts';
import { startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';
import { captureLogs, type LogCapture } from '../support/logs.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';

/** Marks every token, secret, code and cookie value sent: none may reach a log line. */
const MARK = `hostile${randomBytes(6).toString('hex')}`;
const secret = (what: string) => `${MARK}-${what}`;

let upstream: UpstreamWithAs;
/** A plain MCP-shaped upstream in mode `none`, so hostile requests with a valid token are forwarded. */
let open: RawUpstream;
/** A valid access token for `open`. */
let openToken: string;
let app: App;
let base: URL;
let logs: LogCapture;
/** A valid access token for `notes`, so hostile bodies reach the parsers behind authentication; fresh for each test (logout ends its session). */
let accessToken: string;
/** Every access and refresh token issued: none may reach a log line. */
const issued: string[] = [];
let gw: AuthGateway;
let client: { clientId: string; redirectUri: string };
let storeKey: string;
/** The session of the current test's login, for a valid login cookie. */
let sessionId: string;
/** Each request from its own loopback address: the per-IP rate limits must not turn the sweep into 429s. */
let sourceCounter = 0;

before(async () => {
  upstream = await startUpstreamWithAs({ registration: 'dcr', openHandshake: true });
  open = await startRawUpstream();
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  base = new URL(issuer);
  storeKey = generateStoreKey();
  const pem = generateSigningKeyPem();
  const config = parseConfig(
    JSON.stringify({
      server: { listen: `127.0.0.1:${port}`, publicUrl: issuer, devMode: true, drainTimeout: '1s', maxBodyBytes: 1024 * 1024 },
      idp: { issuer: 'http://127.0.0.1:9/unused', clientId: 'mcpgate' },
      authServer: { signingKeys: ['file:/keys/signing.pem'], accessTokenTtl: '1h' },
      storage: { kind: 'memory', encryptionKeys: [{ id: 'k1', key: 'env:STORE_KEY' }] },
      upstreams: [
        { name: 'notes', url: upstream.mcpUrl, auth: { mode: 'oauth', scopes: ['notes:read'] } },
        { name: 'open', url: open.url.href, auth: { mode: 'none' } },
      ],
    }),
    'test-config',
    { env: { STORE_KEY: storeKey }, readFile: () => pem },
  );
  const store = createMemoryStore();
  logs = captureLogs();
  app = createApp(config, { logDestination: logs.destination, store, idpClient: refusingIdp });
  await app.listen({ host: '127.0.0.1', port });
  const sealer = createSealer({ keys: [{ id: 'k1', key: Buffer.from(storeKey, 'base64') }] });
  const now = Date.now;
  gw = {
    app, url: base, issuer, resource: (name) => `${issuer}/${name}/mcp`, store,
    stores: createAuthStores({ store, sealer, now }), now, advance: () => {}, logs, close: () => app.close(),
  };
  client = await registerClient(gw);
});

beforeEach(async () => {
  const tokens = await login(gw, client, { resource: gw.resource('notes'), subject: 'alice' });
  accessToken = tokens.accessToken;
  sessionId = tokens.sessionId;
  const forOpen = await login(gw, client, { resource: gw.resource('open'), subject: 'alice' });
  openToken = forOpen.accessToken;
  issued.push(tokens.accessToken, tokens.refreshToken, tokens.sessionId, forOpen.accessToken, forOpen.refreshToken, forOpen.sessionId);
});

after(async () => {
  await app?.close();
  await upstream?.close();
  await open?.close();
});

/** What a refusal on this route must look like. */
type Kind = 'oauth' | 'jsonrpc' | 'browser' | 'ops' | 'any';

interface HostileRequest {
  method: string;
  /** The raw request target, sent as is (no normalisation by the client). */
  target: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
}

/** A fresh loopback source address per request. */
function nextSource(): string {
  const n = sourceCounter++;
  return `127.0.${1 + Math.floor(n / 250)}.${1 + (n % 250)}`;
}

/** Sends one plain request (the target goes through `new URL`, which normalises it). */
function hit(request: HostileRequest): Promise<RawResponse> {
  return send(new URL(request.target, base), { method: request.method, headers: request.headers, body: request.body, localAddress: nextSource() });
}

function show(request: HostileRequest): string {
  return `${request.method} ${request.target.slice(0, 100)} ${JSON.stringify(request.headers ?? {}).slice(0, 300)}`;
}

/** Sends one request with its target verbatim: `new URL` would resolve `..`, `//` and re-encode the path. */
function sendRaw(request: HostileRequest): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: Number(base.port), path: request.target, method: request.method, headers: request.headers, localAddress: nextSource(), agent: false },
      (res) => {
        if (String(res.headers['content-type']).startsWith('text/event-stream')) {
          // A GET stream held open is an answer: take its head and hang up.
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: '' });
          res.destroy();
          return;
        }
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
        // A response cut mid-body: say so rather than wait forever.
        res.on('close', () => (res.complete ? undefined : reject(new Error(`response ${res.statusCode} cut before its end: ${show(request)}`))));
      },
    );
    req.on('error', (error) => reject(new Error(show(request), { cause: error })));
    // No answer at all is the one failure a status check cannot see.
    req.setTimeout(5000, () => req.destroy(new Error(`no answer within 5 s`)));
    req.end(request.body);
  });
}

/** Asserts one answer is a clear refusal (or an answer) of the route's kind. */
function assertWellFormed(kind: Kind, request: HostileRequest, res: RawResponse, allow5xx: number[] = []): void {
  const what = `${request.method} ${request.target.slice(0, 120)} → ${res.status} ${res.body.slice(0, 300)}`;
  assert.ok(res.status < 500 || allow5xx.includes(res.status), `server error: ${what}`);
  // Node's parser refused the request before any route (an unknown method, or the bytes after a GET's
  // unframed body read as the next request): the front door's RFC 6749 body, whatever the path.
  if (res.status === 400 && res.headers.connection === 'close' && res.body === '{"error":"invalid_request","error_description":"malformed HTTP request"}') return;
  if (res.status >= 300 && res.status < 400) {
    assert.ok(res.headers.location, `redirect without Location: ${what}`);
    return;
  }
  const type = String(res.headers['content-type'] ?? '');
  if (res.status < 300) {
    if (type.includes('json')) assert.doesNotThrow(() => JSON.parse(res.body), what);
    return;
  }
  if (type.startsWith('text/html')) {
    assert.ok(kind === 'browser' || kind === 'any', `HTML refusal on a ${kind} route: ${what}`);
    assert.match(res.body, /<html/i, what);
    // Whatever the page reflects is escaped (the sweep sends script and img tags in every parameter).
    assert.doesNotMatch(res.body, /<script>alert|<img src=x/i, `unescaped reflection: ${what}`);
    return;
  }
  assert.match(type, /^application\/json/, `refusal without a JSON body: ${what}`);
  const body = JSON.parse(res.body) as Record<string, unknown>;
  if (kind === 'jsonrpc' || (kind === 'any' && body.jsonrpc !== undefined)) {
    assert.equal(body.jsonrpc, '2.0', what);
    const error = body.error as { code?: unknown; message?: unknown } | undefined;
    assert.equal(typeof error?.code, 'number', what);
    assert.equal(typeof error?.message, 'string', what);
    return;
  }
  assert.equal(typeof body.error, 'string', `refusal without an error code: ${what}`);
}

async function assertStillServing(): Promise<void> {
  const res = await hit({ method: 'GET', target: '/healthz' });
  assert.equal(res.status, 200);
}

/** Every route of the app: its path (with sample parameters), methods, and refusal kind. */
const ROUTES: Array<{ path: string; methods: string[]; kind: Kind; bodies?: 'form' | 'json' }> = [
  { path: '/.well-known/oauth-authorization-server', methods: ['GET'], kind: 'oauth' },
  { path: '/.well-known/openid-configuration', methods: ['GET'], kind: 'oauth' },
  { path: '/.well-known/jwks.json', methods: ['GET'], kind: 'oauth' },
  { path: '/.well-known/oauth-protected-resource/notes/mcp', methods: ['GET'], kind: 'oauth' },
  { path: '/oauth/register', methods: ['POST'], kind: 'oauth', bodies: 'json' },
  { path: '/oauth/authorize', methods: ['GET'], kind: 'browser' },
  { path: '/oauth/authorize/resume', methods: ['GET'], kind: 'browser' },
  { path: '/oauth/callback', methods: ['GET'], kind: 'browser' },
  { path: '/oauth/consent', methods: ['POST'], kind: 'browser', bodies: 'form' },
  { path: '/oauth/token', methods: ['POST'], kind: 'oauth', bodies: 'form' },
  { path: '/oauth/revoke', methods: ['POST', 'OPTIONS'], kind: 'oauth', bodies: 'form' },
  { path: '/oauth/logout', methods: ['POST'], kind: 'oauth', bodies: 'form' },
  { path: '/oauth/logout/all', methods: ['POST'], kind: 'oauth', bodies: 'form' },
  { path: '/oauth/login', methods: ['GET'], kind: 'browser' },
  { path: '/oauth/upstream/start', methods: ['GET', 'POST'], kind: 'browser', bodies: 'form' },
  { path: '/oauth/upstream/callback', methods: ['GET'], kind: 'browser' },
  { path: '/oauth/client-metadata.json', methods: ['GET'], kind: 'oauth' },
  { path: '/connect/notes', methods: ['GET', 'POST'], kind: 'browser', bodies: 'form' },
  { path: '/connections', methods: ['GET'], kind: 'oauth' },
  { path: '/connections/notes', methods: ['DELETE'], kind: 'oauth' },
  { path: '/notes/mcp', methods: ['POST', 'GET', 'DELETE', 'OPTIONS'], kind: 'jsonrpc', bodies: 'json' },
  { path: '/open/mcp', methods: ['POST', 'GET', 'DELETE', 'OPTIONS'], kind: 'jsonrpc', bodies: 'json' },
  { path: '/healthz', methods: ['GET'], kind: 'ops' },
  { path: '/readyz', methods: ['GET'], kind: 'ops' },
  { path: '/metrics', methods: ['GET'], kind: 'ops' },
];

/** Parameter names any of the endpoints reads, each given garbage, twice. */
const GARBAGE_QUERY = [
  'client_id=%E0%A4%A', 'client_id=x%00y', 'redirect_uri=javascript:alert(1)', 'redirect_uri=http://[::1', 'response_type=code&response_type=token',
  `code=${secret('code')}`, `code=${secret('code2')}`, 'state=%FF%FE', `flow=${secret('flow')}`, 'flow=%', 'return_to=//evil.example/',
  'code_challenge=' + 'A'.repeat(300), 'code_challenge_method=plain', 'scope=%20%20', 'resource=notes', 'resource=http://x/../notes/mcp', 'error=access_denied',
  `id_token_hint=${secret('idt')}`, 'return=%0d%0aSet-Cookie:%20x=y', 'error_description=%3Cscript%3Ealert(1)%3C/script%3E', 'error=%3Cimg%20src=x%20onerror=alert(1)%3E',
  'error_uri=javascript:alert(1)', 'iss=%3Cscript%3Ealert(1)%3C/script%3E',
].join('&');

const GARBAGE_AUTH = ['Bearer', 'Bearer ', 'Bearer a b', `Bearer ${secret('big')}${'x'.repeat(10 * 1024)}`, 'Basic !!!', `Basic ${Buffer.from(`${secret('id')}:${secret('pw')}`).toString('base64')}`, 'Basic Og==', `bearer ${secret('lower')}`, 'Negotiate YII=', `Bearer ${secret('dot')}.eyJ.x`];

const GARBAGE_COOKIES = [
  `mcpgate_login=${secret('cookie')}`,
  `__Host-mcpgate_login=${secret('cookie2')}; mcpgate_login=; a=b; =; ;;; x`,
  `mcpgate_login=%E0%A4%A${secret('c3')}; mcpgate_login=${secret('c4')}`,
  'a'.repeat(8 * 1024) + '=1',
];

/** Bodies for endpoints that read a form. */
function formBodies(): Array<{ headers: Record<string, string>; body: string | Buffer }> {
  const form = { 'content-type': 'application/x-www-form-urlencoded' };
  return [
    { headers: form, body: '' },
    { headers: form, body: `grant_type=authorization_code&grant_type=refresh_token&code=${secret('fc')}&code=${secret('fc2')}&client_id=a&client_id=b` },
    { headers: form, body: `token=%E0%A4%A${secret('ft')}&client_id=%00&client_secret=${secret('fs')}` },
    { headers: form, body: `grant_type=refresh_token&refresh_token=${secret('rt')}&client_id=${'c'.repeat(100_000)}` },
    { headers: form, body: '&&&==&=%&%%%' },
    { headers: form, body: Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28]) },
    { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ grant_type: 'authorization_code', code: secret('jc') }) },
    { headers: { 'content-type': 'text/plain' }, body: `token=${secret('tp')}` },
    { headers: { 'content-type': 'multipart/form-data; boundary=x' }, body: `--x\r\nContent-Disposition: form-data; name="token"\r\n\r\n${secret('mp')}\r\n--x--` },
    { headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-16' }, body: `token=${secret('u16')}` },
    { headers: { 'content-type': ';;;' }, body: 'a=b' },
    { headers: form, body: Buffer.alloc(5 * 1024 * 1024, 'a') },
  ];
}

/** Bodies for endpoints that read JSON. */
function jsonBodies(): Array<{ headers: Record<string, string>; body: string | Buffer }> {
  const json = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  const deep = '['.repeat(10_000) + ']'.repeat(10_000);
  const deepObject = '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000);
  return [
    { headers: json, body: '' },
    { headers: json, body: '[]' },
    { headers: json, body: '[1,2,3]' },
    { headers: json, body: '42' },
    { headers: json, body: 'null' },
    { headers: json, body: '"string"' },
    { headers: json, body: 'true' },
    { headers: json, body: deep },
    { headers: json, body: deepObject },
    { headers: json, body: '{"jsonrpc":"2.0","id":' },
    { headers: json, body: '{"jsonrpc":"2.0","id":{"a":1},"method":{"x":1}}' },
    { headers: json, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}' },
    { headers: json, body: '{"__proto__":{"admin":true},"constructor":{"prototype":{"x":1}},"redirect_uris":"x"}' },
    { headers: json, body: '{"redirect_uris":[null,1,{}],"grant_types":"x","token_endpoint_auth_method":7,"client_name":{"a":1}}' },
    { headers: json, body: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) },
    { headers: { 'content-type': 'text/plain' }, body: '{}' },
    { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=b' },
    { headers: json, body: Buffer.alloc(5 * 1024 * 1024, ' ') },
  ];
}

describe('hostile requests on every route', () => {
  for (const route of ROUTES) {
    test(`${route.methods.join('/')} ${route.path}`, async () => {
      const cases: HostileRequest[] = [];
      for (const method of ['PUT', 'PATCH', 'TRACE', 'FOO', ...(route.methods.includes('POST') ? ['GET'] : ['POST'])]) {
        cases.push({ method, target: route.path, headers: { 'content-type': 'application/json' }, body: '{}' });
      }
      for (const method of route.methods) {
        const withToken = { authorization: `Bearer ${route.path === '/open/mcp' ? openToken : accessToken}` };
        const ping = '{"jsonrpc":"2.0","id":1,"method":"ping"}';
        // Headers the gateway forwards upstream: bytes undici refuses, huge values, duplicates.
        const forwarded: Array<Record<string, string>> = [
          { 'mcp-session-id': '\xff\xfe\x80' },
          { 'mcp-session-id': 's'.repeat(8000) },
          { 'mcp-protocol-version': '\x80\x81', 'last-event-id': '\xff' },
          { 'last-event-id': 'e'.repeat(8000) },
          { accept: 'text/event-stream, \xff', 'content-type': 'application/json; charset=\xff' },
          { 'mcp-method': '\xff', 'mcp-name': 'n'.repeat(8000) },
          { 'x-forwarded-for': '1.2.3.4, \xff', 'x-request-id': '\xff' },
        ];
        for (const headers of forwarded) {
          cases.push({ method, target: route.path, headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...withToken, ...headers }, body: method === 'POST' ? ping : undefined });
        }
        cases.push({ method, target: `${route.path}?${GARBAGE_QUERY}&${GARBAGE_QUERY}` });
        cases.push({ method, target: `${route.path}?%` });
        cases.push({ method, target: `${route.path}?name=${'%00'.repeat(2000)}` });
        for (const authorization of GARBAGE_AUTH) cases.push({ method, target: route.path, headers: { authorization } });
        cases.push({ method, target: route.path, headers: { authorization: [`Bearer ${secret('dup1')}`, `Bearer ${secret('dup2')}`] as unknown as string } });
        for (const cookie of GARBAGE_COOKIES) cases.push({ method, target: `${route.path}?${GARBAGE_QUERY}`, headers: { cookie } });
        cases.push({ method, target: route.path, headers: { ...withToken, 'mcp-session-id': secret('sid'), 'mcp-protocol-version': '%00', origin: 'null', 'x-forwarded-for': '::::', host: '%%' } });
        cases.push({ method, target: route.path, headers: { ...withToken, 'content-type': 'application/json', 'mcp-session-id': [secret('s1'), secret('s2')] as unknown as string }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
        if (method === 'POST' && route.bodies) {
          for (const b of route.bodies === 'form' ? formBodies() : jsonBodies()) {
            cases.push({ method, target: route.path, headers: b.headers, body: b.body });
            cases.push({ method, target: route.path, headers: { ...b.headers, ...withToken }, body: b.body });
          }
        }
      }
      for (const method of route.methods) {
        // Past Node's 16 KB header limit the parser answers 431 itself and closes: read it on a raw socket,
        // since an HTTP client still writing the target sees the reset rather than the answer.
        const answer = await rawExchange(`${method} ${route.path}?${'q'.repeat(100 * 1024)}=${secret('huge')} HTTP/1.1\r\nHost: x\r\n\r\n`);
        assert.match(answer, /^HTTP\/1\.1 431 [^]*\r\n\r\n\{"error":"invalid_request"/, answer.slice(0, 200));
      }
      for (const request of cases) {
        const res = await sendRaw(request).catch((error: unknown) => {
          // A 5 MB body refused early may reset the socket while the client still writes: not a server fault.
          if (Buffer.isBuffer(request.body) && request.body.length > 1024 * 1024) return undefined;
          throw new Error(`${request.method} ${request.target.slice(0, 100)} ${JSON.stringify(request.headers ?? {}).slice(0, 200)}`, { cause: error });
        });
        if (res) assertWellFormed(route.kind, request, res, route.path === '/readyz' ? [503] : [502, 503]);
      }
      await assertStillServing();
    });
  }

  test('path traversal, doubled slashes and odd upstream names', async () => {
    const targets = [
      '/../healthz', '/oauth/../metrics', '/%2e%2e/%2e%2e/etc/passwd', '/notes/%2e%2e/mcp', '//notes/mcp', '/notes//mcp', '///', '//evil.example/oauth/token',
      '/.well-known/oauth-protected-resource/%2e%2e/mcp', '/.well-known/oauth-protected-resource/..%2fnotes/mcp', '/.well-known/oauth-protected-resource/%E0%A4%A/mcp',
      '/%E0%A4%A/mcp', '/%00/mcp', '/%/mcp', '/no%20such/mcp', '/__proto__/mcp', '/constructor/mcp', '/hasOwnProperty/mcp', `/${'n'.repeat(4000)}/mcp`,
      '/notes%2fmcp', '/notes/mcp/', '/notes/mcp/..', '/NOTES/mcp', '/connect/%E0%A4%A', '/connect/__proto__', '/connect/%00', '/connect/..%2f..%2f',
      '/connections/%E0%A4%A', '/connections/__proto__', '/connections/%2e%2e', '/oauth/upstream/start/../../healthz', '/\\notes\\mcp', '/notes/mcp#frag',
      '*', 'http://evil.example/notes/mcp', 'http://127.0.0.1/oauth/token?x=%', '/%F0%9F%92%A9/mcp', '/%C0%AE%C0%AE/mcp',
    ];
    for (const target of targets) {
      for (const method of ['GET', 'POST', 'DELETE', 'OPTIONS']) {
        const request: HostileRequest = {
          method,
          target,
          headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
          body: method === 'POST' ? '{"jsonrpc":"2.0","id":1,"method":"ping"}' : undefined,
        };
        const res = await sendRaw(request);
        // What these resolve to (if anything) varies: any well-formed refusal will do.
        assertWellFormed('any', request, res, [502, 503]);
      }
    }
    await assertStillServing();
  });

  test('unknown upstream names with odd characters get a JSON-RPC error on the MCP path', async () => {
    const names = ['no%20such', '__proto__', 'constructor', 'hasOwnProperty', 'n'.repeat(4000), '%F0%9F%92%A9', 'a%2Fb', '%3Cscript%3Ealert(1)%3C%2Fscript%3E', 'NOTES', 'notes%00', "'%22;--", '%0d%0aX-Injected:%201'];
    for (const name of names) {
      for (const method of ['GET', 'POST', 'DELETE', 'OPTIONS']) {
        const request: HostileRequest = {
          method,
          target: `/${name}/mcp`,
          headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
          body: method === 'POST' ? '{"jsonrpc":"2.0","id":7,"method":"ping"}' : undefined,
        };
        const res = await sendRaw(request);
        assert.ok(res.status === 404 || (method === 'OPTIONS' && res.status < 300), `${method} ${name.slice(0, 40)} → ${res.status} ${res.body.slice(0, 200)}`);
        assertWellFormed('jsonrpc', request, res);
        assert.equal(res.headers['x-injected'], undefined);
      }
    }
    for (const name of names) {
      const res = await sendRaw({ method: 'GET', target: `/connect/${name}`, headers: { cookie: `mcpgate_login=${secret('cn')}` } });
      assertWellFormed('browser', { method: 'GET', target: `/connect/${name}` }, res);
      const gone = await sendRaw({ method: 'DELETE', target: `/connections/${name}`, headers: { authorization: `Bearer ${accessToken}` } });
      assertWellFormed('oauth', { method: 'DELETE', target: `/connections/${name}` }, gone);
    }
    await assertStillServing();
  });

  test('hostile parameters next to a real client id: authorize, token, revoke, register', async () => {
    const redirect = encodeURIComponent(client.redirectUri);
    const id = client.clientId;
    const authorize = [
      `client_id=${id}&redirect_uri=${redirect}`,
      `client_id=${id}&redirect_uri=${redirect}&response_type=code&response_type=code`,
      `client_id=${id}&client_id=${id}&redirect_uri=${redirect}&response_type=code`,
      `client_id=${id}&redirect_uri=${redirect}&redirect_uri=${redirect}&response_type=code`,
      `client_id=${id}&redirect_uri=${redirect}&response_type=token`,
      `client_id=${id}&redirect_uri=${redirect}&response_type=code&code_challenge=%E0%A4%A&code_challenge_method=S256`,
      `client_id=${id}&redirect_uri=${redirect}&response_type=code&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256&resource=%00`,
      `client_id=${id}&redirect_uri=${redirect}&response_type=code&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256&resource=${encodeURIComponent(`${base.origin}/notes/mcp`)}&resource=${encodeURIComponent(`${base.origin}/open/mcp`)}`,
      `client_id=${id}&redirect_uri=${redirect}&response_type=code&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256&scope=${encodeURIComponent('mcp mcpgate:connect:%00 mcpgate:connect:__proto__ ' + 'x'.repeat(3000))}`,
      `client_id=${id}&redirect_uri=${redirect}&response_type=code&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256&state=${'%FF'.repeat(1000)}`,
      `client_id=${id}&redirect_uri=${redirect}&response_type=code&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256&prompt=none&prompt=login&max_age=-1`,
      `client_id=${id}&redirect_uri=${encodeURIComponent(client.redirectUri + '/../evil')}&response_type=code`,
      `client_id=${id}&redirect_uri=${encodeURIComponent(client.redirectUri + '?x=1#f')}&response_type=code`,
      `client_id=${id}&redirect_uri=${encodeURIComponent(client.redirectUri.toUpperCase())}&response_type=code`,
      `client_id=${id}&request=${secret('jar')}&request_uri=urn:x`,
    ];
    for (const query of authorize) {
      const request: HostileRequest = { method: 'GET', target: `/oauth/authorize?${query}`, headers: { cookie: `mcpgate_login=${secret('ck')}` } };
      const res = await sendRaw(request);
      assertWellFormed('browser', request, res);
      // A redirect goes only to the registered redirect URI (RFC 6749 §4.1.2.1) or to our own sign-in.
      const location = res.headers.location;
      if (location) assert.ok(location.startsWith(`${client.redirectUri}?`) || location.startsWith(base.origin) || location.startsWith('http://127.0.0.1:9/'), `${query} → ${location}`);
    }
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    const tokenBodies = [
      `grant_type=authorization_code&client_id=${id}&code=${secret('code')}&redirect_uri=${redirect}&code_verifier=${'v'.repeat(43)}`,
      `grant_type=authorization_code&client_id=${id}&code=${secret('code')}&code=${secret('code')}&redirect_uri=${redirect}&code_verifier=%E0%A4%A`,
      `grant_type=refresh_token&client_id=${id}&refresh_token=${secret('rt')}&resource=%00&scope=${'x'.repeat(10_000)}`,
      `grant_type=refresh_token&client_id=${id}&refresh_token=&refresh_token=${secret('rt2')}`,
      `grant_type=client_credentials&client_id=${id}&client_secret=${secret('cs')}`,
      `grant_type=urn:ietf:params:oauth:grant-type:token-exchange&client_id=${id}&subject_token=${secret('st')}&subject_token_type=urn:ietf:params:oauth:token-type:access_token`,
      `grant_type=password&client_id=${id}&username=alice&password=${secret('pw')}`,
      `grant_type=authorization_code&client_id=${id}&code=${secret('code')}&redirect_uri=${redirect}&code_verifier=${'v'.repeat(43)}&resource=http://%5B::1`,
    ];
    for (const body of tokenBodies) {
      for (const headers of [form, { ...form, authorization: `Basic ${Buffer.from(`${id}:${secret('basic')}`).toString('base64')}` }, { ...form, authorization: `Basic ${Buffer.from(`%E0%A4%A:${secret('b2')}`).toString('base64')}` }]) {
        const request: HostileRequest = { method: 'POST', target: '/oauth/token', headers, body };
        assertWellFormed('oauth', request, await sendRaw(request));
        const revoke: HostileRequest = { method: 'POST', target: '/oauth/revoke', headers, body: `${body}&token=${secret('rv')}&token_type_hint=%00` };
        assertWellFormed('oauth', revoke, await sendRaw(revoke));
      }
    }
    const json = { 'content-type': 'application/json' };
    const registrations = [
      { redirect_uris: Array.from({ length: 10_000 }, (_, i) => `http://127.0.0.1:${i}/cb`) },
      { redirect_uris: ['javascript:alert(1)'] },
      { redirect_uris: ['http://127.0.0.1/cb#frag'] },
      { redirect_uris: ['http://127.0.0.1/cb'], client_name: 'x'.repeat(100_000) },
      { redirect_uris: ['http://127.0.0.1/cb'], client_name: '<script>\u0000\u202e' },
      { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'private_key_jwt', jwks_uri: 'http://169.254.169.254/' },
      { redirect_uris: ['http://127.0.0.1/cb'], grant_types: ['implicit', 'password'], response_types: ['token'] },
      { redirect_uris: ['http://127.0.0.1/cb'], scope: 'x '.repeat(10_000) },
      { redirect_uris: ['http://127.0.0.1/cb'], client_id: 'chosen', client_secret: secret('reg') },
      { redirect_uris: ['http://[::1/cb'] },
      { redirect_uris: 'http://127.0.0.1/cb' },
      { redirect_uris: [] },
    ];
    for (const registration of registrations) {
      const request: HostileRequest = { method: 'POST', target: '/oauth/register', headers: json, body: JSON.stringify(registration) };
      assertWellFormed('oauth', request, await sendRaw(request));
    }
    await assertStillServing();
  });

  test('browser endpoints with a valid login cookie and hostile parameters', async () => {
    const codec = createCookieCodec({ key: deriveCookieKey({ encryptionKey: storeKey }).key, secure: false });
    const cookie = loginCookie(codec).issue({ sub: 'alice', sid: sessionId }).split(';')[0]!;
    const targets = [
      '/connect/notes', '/connect/notes?return_to=//evil.example/&return_to=javascript:alert(1)', '/connect/open', '/connect/%E0%A4%A',
      `/oauth/upstream/start?flow=${secret('flow')}`, '/oauth/upstream/start?flow=&flow=%00', '/oauth/upstream/start',
      `/oauth/upstream/callback?state=${secret('st')}&code=${secret('code')}`, '/oauth/upstream/callback?state=%E0%A4%A&error=access_denied&error_description=%3Cscript%3Ealert(1)%3C/script%3E',
      `/oauth/upstream/callback?state=&state=${secret('st2')}&iss=http://evil.example`, '/oauth/upstream/callback?error=%00',
      '/oauth/login?return_to=//evil.example/', '/oauth/login?return_to=https://evil.example/&return_to=/ok', '/oauth/login?return_to=%2F%2Fevil.example',
      '/oauth/login?return_to=/%0d%0aSet-Cookie:x=y', '/oauth/login?return_to=javascript:alert(1)', '/oauth/login?return_to=%5C%5Cevil.example',
      `/oauth/callback?state=${secret('cb')}&code=${secret('cbc')}`, '/oauth/callback?error=login_required&error_description=%3Cscript%3Ealert(1)%3C/script%3E',
      `/oauth/authorize/resume?pending=${secret('p')}&state=%00`,
    ];
    for (const target of targets) {
      for (const extra of [{}, { cookie: `${cookie}; ${cookie}x` }, { cookie: `${cookie}; mcpgate_login=${secret('dup')}` }]) {
        const request: HostileRequest = { method: 'GET', target, headers: { cookie, ...extra } };
        const res = await sendRaw(request);
        assertWellFormed('browser', request, res, [502, 503]);
        // A redirect never leaves for a host the request named (open redirect).
        const location = res.headers.location ?? '';
        assert.doesNotMatch(location, /^(?:https?:)?\/\/evil\.example|^javascript:|^\/\\|^\\\\/i, `${target} → ${location}`);
        assert.equal(String(res.headers['set-cookie'] ?? '').includes('x=y'), false, `header injection: ${target}`);
      }
    }
    // A real upstream flow: its start link with hostile company, then the callback with its real state and a forged code.
    const call = await sendRaw({
      method: 'POST',
      target: '/notes/mcp',
      headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }),
    });
    const flow = /\/oauth\/upstream\/start\?flow=([A-Za-z0-9_-]+)/.exec(call.body)?.[1];
    assert.ok(flow, `an auth_required link: ${call.body.slice(0, 300)}`);
    for (const target of [`/oauth/upstream/start?flow=${flow}&flow=${secret('f2')}`, `/oauth/upstream/start?flow=${flow}%00`]) {
      assertWellFormed('browser', { method: 'GET', target }, await sendRaw({ method: 'GET', target, headers: { cookie } }));
    }
    // Someone else's browser (no cookie, a garbage one) is refused without burning the flow.
    for (const headers of [{}, { cookie: `mcpgate_login=${secret('other')}` }] as Array<Record<string, string>>) {
      const target = `/oauth/upstream/start?flow=${flow}`;
      assertWellFormed('browser', { method: 'GET', target }, await sendRaw({ method: 'GET', target, headers }));
    }
    // Confirmations forged without the page's token (or with another browser's) connect nothing.
    const form = { cookie, 'content-type': 'application/x-www-form-urlencoded', origin: base.origin };
    for (const body of ['', `flow=${flow}`, `flow=${flow}&csrf=${secret('csrf')}`, `flow=${flow}&flow=${flow}&csrf=x`, 'csrf=%00&flow=%E0%A4%A']) {
      for (const target of ['/oauth/upstream/start', '/connect/notes']) {
        const request: HostileRequest = { method: 'POST', target, headers: form, body };
        const res = await sendRaw(request);
        assertWellFormed('browser', request, res);
        assert.ok(res.status === 400 || res.status === 403, `${target} ${body} → ${res.status}`);
      }
    }
    const confirmation = await sendRaw({ method: 'GET', target: `/oauth/upstream/start?flow=${flow}`, headers: { cookie } });
    assert.equal(confirmation.status, 200);
    const csrf = /name="csrf" value="([^"]+)"/.exec(confirmation.body)![1]!;
    const csrfCookie = String(confirmation.headers['set-cookie']).split(';')[0]!;
    const toAs = await sendRaw({ method: 'POST', target: '/oauth/upstream/start', headers: { ...form, cookie: `${cookie}; ${csrfCookie}` }, body: `flow=${flow}&csrf=${encodeURIComponent(csrf)}` });
    const onward = /content="0;url=([^"]+)"/.exec(toAs.body)?.[1]?.replace(/&amp;/g, '&');
    assert.ok(toAs.status === 200 && onward?.startsWith(upstream.issuer), `${toAs.status} ${toAs.body.slice(0, 300)}`);
    const state = new URL(onward!).searchParams.get('state')!;
    // The first one spends the single-use state on a forged code the upstream's token endpoint refuses; the rest find it spent.
    for (const query of [
      `state=${state}&code=${secret('c5')}&code=${secret('c6')}&iss=${encodeURIComponent(upstream.issuer)}`,
      `state=${state}&state=${state}&code=${secret('c1')}`,
      `state=${state}&code=${secret('c2')}&iss=${encodeURIComponent('http://evil.example')}`,
      `state=${state}&code=${secret('c3')}&code=${secret('c4')}&iss=${encodeURIComponent(upstream.issuer)}`,
      `state=${state}&error=%3Cscript%3Ealert(1)%3C/script%3E&error_description=%00&iss=${encodeURIComponent(upstream.issuer)}`,
    ]) {
      const request: HostileRequest = { method: 'GET', target: `/oauth/upstream/callback?${query}`, headers: { cookie } };
      // 502: the upstream's token endpoint refused the forged code (the dependency is the issue).
      assertWellFormed('browser', request, await sendRaw(request), [502]);
    }
    const consent = ['', 'decision=approve', `decision=approve&pending=${secret('pend')}&csrf=${secret('csrf')}`, 'decision=%00&pending=%E0%A4%A', 'decision=deny&decision=approve&pending=a&pending=b'];
    for (const body of consent) {
      const request: HostileRequest = { method: 'POST', target: '/oauth/consent', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', origin: base.origin }, body };
      assertWellFormed('browser', request, await sendRaw(request));
    }
    await assertStillServing();
  });

  test('a burst of hostile requests at once: every one answered, none a 5xx', async () => {
    const burst: HostileRequest[] = [];
    for (let i = 0; i < 160; i++) {
      const route = ROUTES[i % ROUTES.length]!;
      const method = route.methods[i % route.methods.length]!;
      const json = jsonBodies()[i % 8]!;
      burst.push({
        method,
        target: `${route.path}?${i % 2 ? GARBAGE_QUERY : '%'}`,
        headers: { ...json.headers, authorization: i % 3 ? GARBAGE_AUTH[i % GARBAGE_AUTH.length]! : `Bearer ${openToken}`, cookie: GARBAGE_COOKIES[i % GARBAGE_COOKIES.length]! },
        body: method === 'POST' ? json.body : undefined,
      });
    }
    const answers = await Promise.all(burst.map((request) => sendRaw(request).then((res) => ({ request, res }))));
    for (const { request, res } of answers) {
      const route = ROUTES.find((r) => request.target.startsWith(`${r.path}?`))!;
      assertWellFormed(route.kind, request, res, route.path === '/readyz' ? [503] : [502, 503]);
    }
    await assertStillServing();
  });

  test('a forged Host or X-Forwarded-Host never shows in an answer (no trusted proxy is configured)', async () => {
    for (const route of ROUTES) {
      for (const method of route.methods) {
        const request: HostileRequest = {
          method,
          target: route.path,
          headers: { host: 'evil.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https', forwarded: 'host=evil.example;proto=https', cookie: `mcpgate_login=${secret('fh')}` },
        };
        const res = await sendRaw(request);
        assertWellFormed(route.kind, request, res, route.path === '/readyz' ? [503] : [502, 503]);
        assert.doesNotMatch(`${JSON.stringify(res.headers)}${res.body}`, /evil\.example/, `${method} ${route.path} reflected the forged host`);
      }
    }
  });

  test('a huge JSON-RPC method name is not copied into the log', async () => {
    const before = logs.lines.length;
    for (const authorization of ['Bearer nope', `Bearer ${openToken}`]) {
      const request: HostileRequest = {
        method: 'POST',
        target: '/open/mcp',
        headers: { authorization, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'm'.repeat(500_000), params: { name: 'n'.repeat(100_000) } }),
      };
      assertWellFormed('jsonrpc', request, await sendRaw(request));
    }
    // One request, one access line of bounded size: a client cannot write half a megabyte into the log per request.
    const longest = Math.max(...logs.lines.slice(before).map((line) => line.length));
    assert.ok(longest < 4096, `a log line of ${longest} characters`);
  });

  test('hostile paths and names do not become metric labels', async () => {
    const metrics = (await hit({ method: 'GET', target: '/metrics' })).body;
    // Routes and upstreams are labelled by the configured names only: a client cannot grow the series.
    for (const line of metrics.split('\n').filter((l) => !l.startsWith('#'))) {
      for (const [, name, value] of line.matchAll(/(route|upstream)="([^"]*)"/g)) {
        if (name === 'upstream') assert.ok(['', 'notes', 'open'].includes(value!), line.slice(0, 200));
        else assert.ok(value === 'unmatched' || value!.startsWith('/') || /^[a-z-]+$/.test(value!), line.slice(0, 200));
      }
      assert.doesNotMatch(line, /__proto__|nnnnnnnn|no such|evil|%E0|\.\./, line.slice(0, 200));
    }
  });

});

/** Writes raw bytes on a fresh connection; resolves with everything read until the server closes. */
function rawExchange(bytes: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(base.port), '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    // The server may close while we still write (a refused request): what it answered is what was read.
    socket.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' || error.code === 'EPIPE' ? undefined : reject(error)));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.end(bytes);
  });
}

describe('malformed HTTP on a raw socket', () => {
  test('malformed request lines and headers get a 4xx and the connection closes', async () => {
    const inputs = [
      'GARBAGE\r\n\r\n',
      'GET\r\n\r\n',
      'GET / HTTP/9.9\r\nHost: x\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n',
      'GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n',
      'POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello',
      'POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST /oauth/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
      'POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
      `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`,
      'GET /healthz HTTP/1.1\r\nHost: x\r\n' + 'X-Many: 1\r\n'.repeat(3000) + '\r\n',
      Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]), // a TLS ClientHello on the plain port
    ];
    assert.match(await rawExchange('CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n'), /^HTTP\/1\.1 405 [^]*\{"error":"method_not_allowed"/);
    assert.match(
      await rawExchange('POST /oauth/token HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'),
      /^HTTP\/1\.1 417 [^]*\{"error":"expectation_failed"/,
    );
    // Upgrade and Expect headers are ignored or answered (100 Continue), never a 5xx or a hang.
    for (const input of [
      'GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\n\r\n',
      'GET /open/mcp HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n',
      'POST /oauth/token HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\nConnection: close\r\n\r\na=b',
      'GET /healthz HTTP/1.0\r\n\r\n',
      'GET http://evil.example/healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n',
    ]) {
      const answer = await rawExchange(input);
      const status = Number(/HTTP\/1\.1 (?!100)(\d{3})/.exec(answer)?.[1] ?? 0);
      assert.ok(status >= 200 && status < 500, `${JSON.stringify(input.slice(0, 60))} → ${answer.slice(0, 200)}`);
    }
    // Empty lines before a request line are ignored (RFC 9112 §2.2): only the hang-up ends this one.
    assert.equal(await rawExchange('\r\n\r\n\r\n'), '');
    for (const input of inputs) {
      const answer = await rawExchange(input);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
      // A request the parser refuses gets 400 (431 for oversized headers) with an RFC 6749 error body.
      assert.ok(status >= 400 && status < 500, `${JSON.stringify(String(input).slice(0, 60))} → ${answer.slice(0, 200)}`);
      assert.match(answer, /\r\n\r\n\{"error":"invalid_request","error_description":"[^"]+"\}$/, answer.slice(0, 300));
    }
    await assertStillServing();
  });

  test('repeated headers on every POST route: refused or answered, never a 5xx', async () => {
    const repeats = [
      'Content-Type: application/json\r\nContent-Type: application/x-www-form-urlencoded',
      `Authorization: Bearer ${secret('r1')}\r\nAuthorization: Basic ${secret('r2')}`,
      'Host: a\r\nHost: b',
      `Cookie: mcpgate_login=${secret('r3')}\r\nCookie: mcpgate_login=${secret('r4')}`,
      'Origin: http://evil.example\r\nOrigin: null',
      'Accept: application/json\r\nAccept: text/event-stream',
      'Mcp-Session-Id: a\r\nMcp-Session-Id: b\r\nMcp-Protocol-Version: 1\r\nMcp-Protocol-Version: 2',
      'X-Request-Id: a\r\nX-Request-Id: b\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2',
    ];
    const body = 'grant_type=refresh_token&refresh_token=x';
    for (const route of ROUTES.filter((r) => r.methods.includes('POST'))) {
      for (const headers of repeats) {
        const withHost = headers.startsWith('Host:') ? headers : `Host: 127.0.0.1\r\n${headers}`;
        const answer = await rawExchange(`POST ${route.path} HTTP/1.1\r\n${withHost}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
        assert.ok(status >= 200 && status < 500, `${route.path} ${headers.slice(0, 60)} → ${answer.slice(0, 200)}`);
      }
    }
    await assertStillServing();
  });

  test('clients that hang up mid-body on every POST route leave the server serving', async () => {
    for (const route of ROUTES.filter((r) => r.methods.includes('POST'))) {
      await new Promise<void>((resolve) => {
        const socket = connect(Number(base.port), '127.0.0.1', () => {
          // The route's own content type and a length under its limits, so the handler is reading when the client goes.
          const type = route.bodies === 'form' ? 'application/x-www-form-urlencoded' : 'application/json';
          socket.write(`POST ${route.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${openToken}\r\nOrigin: ${base.origin}\r\nContent-Type: ${type}\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":"2.0",`);
          setTimeout(() => socket.destroy(), 20);
        });
        socket.on('error', () => undefined);
        socket.on('close', () => resolve());
      });
    }
    await assertStillServing();
  });

  test('a client that sends headers slowly and stops is cut by headersTimeout; the server keeps serving', async () => {
    const server = app.frontDoor.server;
    const saved = server.headersTimeout;
    // The default 20 s would make the test slow; the check runs every 5 s (connectionsCheckingInterval).
    server.headersTimeout = 500;
    let socket: Socket | undefined;
    try {
      const closed = await new Promise<string>((resolve, reject) => {
        socket = connect(Number(base.port), '127.0.0.1', () => {
          socket!.write('GET /healthz HTTP/1.1\r\n');
          setTimeout(() => socket!.write('Host: x\r\n'), 100);
          setTimeout(() => socket!.write('X-Slow: 1\r\n'), 200); // and never the blank line
        });
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.on('error', reject);
        socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
      });
      assert.match(closed, /^HTTP\/1\.1 408 [^]*\{"error":"invalid_request"/, closed.slice(0, 200));
    } finally {
      server.headersTimeout = saved;
      socket?.destroy();
    }
    await assertStillServing();
  });
});

// Last, so it sees every line the sweep above caused (the raw-socket cases included).
describe('the log after the sweep', () => {
  test('no token, secret, code or cookie sent is in the log', async () => {
    await assertStillServing();
    const text = logs.text();
    assert.ok(logs.lines.length > 100, 'the sweep was logged');
    assert.equal(text.includes(MARK), false, `a sent secret reached the log: ${text.slice(Math.max(0, text.indexOf(MARK) - 300), text.indexOf(MARK) + 100)}`);
    for (const value of issued) assert.equal(text.includes(value), false, 'an issued token or full session id reached the log');
    // Every line is bounded: what a client can put in one (the path) is capped by the 16 KB header limit.
    assert.ok(Math.max(...logs.lines.map((line) => line.length)) < 20_000);
    // No request of the sweep was a server failure, except the upstream refusing a forged code (502).
    const failures = logs.records().filter((r) => r.level === 'error' || r.level === 'fatal' || (r.msg === 'request' && Number(r.status) >= 500 && !(r.route === '/oauth/upstream/callback' && r.status === 502)));
    assert.deepEqual(failures, []);
  });
});
