import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGuardedFetch, FetchRefusedError, type FetchRefusedReason, type GuardedFetch } from '../../src/net/guarded-fetch.ts';
import { classifyAddress } from '../../src/net/address-policy.ts';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A loopback server whose behaviour is chosen per path; records what it saw. */
async function startServer(routes: Record<string, Handler>): Promise<{ server: Server; base: string; port: number; seen: IncomingMessage[] }> {
  const seen: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    seen.push(req);
    const handler = routes[new URL(req.url ?? '/', 'http://x').pathname];
    if (handler) handler(req, res);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, base: `http://127.0.0.1:${port}`, port, seen };
}

async function refused(promise: Promise<unknown>, reason: FetchRefusedReason): Promise<FetchRefusedError> {
  const err = await promise.then(
    () => assert.fail(`expected FetchRefusedError(${reason})`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof FetchRefusedError, `expected FetchRefusedError, got ${String(err)}`);
  assert.equal(err.reason, reason, err.message);
  return err;
}

describe('address classes', () => {
  test('internal ranges, including IPv4-mapped and embedded forms', () => {
    const cases: [string, string][] = [
      ['127.0.0.1', 'loopback'], ['::1', 'loopback'], ['::ffff:7f00:1', 'loopback'], ['[::ffff:127.0.0.1]', 'loopback'],
      ['10.0.0.1', 'private'], ['172.16.5.4', 'private'], ['172.32.0.1', 'public'], ['192.168.0.1', 'private'], ['fd12::1', 'private'],
      ['169.254.169.254', 'link_local'], ['fe80::1%eth0', 'link_local'], ['100.64.0.1', 'shared'], ['100.128.0.1', 'public'],
      ['0.0.0.0', 'unspecified'], ['::', 'unspecified'], ['224.0.0.251', 'multicast'], ['ff02::1', 'multicast'],
      ['64:ff9b::a9fe:a9fe', 'link_local'], ['2002:c0a8:101::1', 'private'], ['255.255.255.255', 'reserved'],
      ['8.8.8.8', 'public'], ['2606:4700::1111', 'public'], ['not-an-ip', 'reserved'],
    ];
    for (const [address, cls] of cases) assert.equal(classifyAddress(address), cls, address);
  });
});

describe('guarded fetch', () => {
  let srv: Awaited<ReturnType<typeof startServer>>;
  const fetchers: GuardedFetch[] = [];
  const make = (...args: Parameters<typeof createGuardedFetch>) => {
    const f = createGuardedFetch(...args);
    fetchers.push(f);
    return f;
  };

  before(async () => {
    srv = await startServer({
      '/ok': (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"hello":"world"}'),
      '/echo-host': (req, res) => res.writeHead(200).end(JSON.stringify({ host: req.headers.host, auth: req.headers.authorization ?? null })),
      '/to-metadata': (_req, res) => res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }).end(),
      '/to-localhost': (_req, res) => res.writeHead(307, { location: `http://localhost:${srv.port}/ok` }).end(),
      '/to-ok': (_req, res) => res.writeHead(301, { location: '/ok' }).end(),
      '/to-echo-other-origin': (_req, res) => res.writeHead(302, { location: `http://public.test:${srv.port}/echo-host` }).end(),
      '/loop': (_req, res) => res.writeHead(302, { location: '/loop' }).end(),
      '/big': (_req, res) => res.writeHead(200).end(Buffer.alloc(300 * 1024, 0x61)),
      '/big-chunked': (_req, res) => {
        // No content-length: the limit has to be enforced while streaming.
        res.writeHead(200);
        const chunk = Buffer.alloc(16 * 1024, 0x62);
        let sent = 0;
        const pump = () => {
          while (sent < 64 && res.write(chunk)) sent++;
          if (sent < 64) res.once('drain', pump);
          else res.end();
        };
        pump();
      },
      '/lying-length': (_req, res) => {
        res.writeHead(200, { 'content-length': '10' });
        res.socket?.write(Buffer.alloc(5000, 0x63)); // more than announced, straight to the socket
        res.socket?.end();
      },
      '/hang': () => {}, // never answers
      '/slow-body': (_req, res) => {
        res.writeHead(200);
        res.write('{');
        // and never finishes
      },
      '/not-json': (_req, res) => res.writeHead(200).end('<html>'),
      '/post-redirect': (_req, res) => res.writeHead(307, { location: '/ok' }).end(),
    });
  });

  after(async () => {
    await Promise.all(fetchers.map((f) => f.close()));
    srv.server.closeAllConnections();
    await new Promise((resolve) => srv.server.close(resolve));
  });

  test('refuses loopback by default, before connecting', async () => {
    const f = make({ allowHttp: true });
    const before = srv.seen.length;
    const err = await refused(f(`${srv.base}/ok`), 'ssrf_blocked');
    assert.doesNotMatch(err.message, /\/ok/); // messages name the host, never the path
    assert.equal(srv.seen.length, before);
  });

  test('refuses names that resolve to loopback (localhost)', async () => {
    const f = make({ allowHttp: true });
    await refused(f(`http://localhost:${srv.port}/ok`), 'ssrf_blocked');
  });

  test('refuses a name when any of its addresses is internal', async () => {
    const f = make({ allowHttp: true, resolve: async () => [{ address: '93.184.216.34', family: 4 }, { address: '10.0.0.7', family: 4 }] });
    await refused(f('http://mixed.test/'), 'ssrf_blocked');
  });

  test('refuses IPv4-mapped IPv6 and link-local literals', async () => {
    const f = make({ allowHttp: true });
    await refused(f('http://[::ffff:127.0.0.1]/'), 'ssrf_blocked');
    await refused(f('http://169.254.169.254/latest/meta-data/'), 'ssrf_blocked');
    await refused(f('http://0.0.0.0/'), 'ssrf_blocked');
  });

  test('allowed hosts may use loopback; the response is read whole', async () => {
    const f = make({ allowHttp: true, allowHosts: ['127.0.0.1'] });
    const res = await f(`${srv.base}/ok`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.json(), { hello: 'world' });
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.equal(res.url, `${srv.base}/ok`);
  });

  test('connects to the checked address and keeps the Host header', async () => {
    const f = make({ allowHttp: true, allowHosts: ['public.test'], resolve: async () => [{ address: '127.0.0.1', family: 4 }] });
    const res = await f(`http://PUBLIC.test:${srv.port}/echo-host`);
    assert.deepEqual(res.json(), { host: `public.test:${srv.port}`, auth: null });
  });

  test('allowPrivate opens internal addresses but never unspecified or multicast', async () => {
    const f = make({ allowHttp: true, allowPrivate: true });
    assert.equal((await f(`http://localhost:${srv.port}/ok`)).status, 200);
    await refused(f('http://0.0.0.0/'), 'ssrf_blocked');
    await refused(f('http://224.0.0.1/'), 'ssrf_blocked');
  });

  test('a redirect from an allowed host to an internal address is refused', async () => {
    const f = make({ allowHttp: true, allowHosts: ['127.0.0.1'] });
    await refused(f(`${srv.base}/to-metadata`), 'ssrf_blocked');
    await refused(f(`${srv.base}/to-localhost`), 'ssrf_blocked'); // localhost is not on the list
  });

  test('follows allowed redirects and reports the final URL', async () => {
    const f = make({ allowHttp: true, allowHosts: ['127.0.0.1'] });
    const res = await f(`${srv.base}/to-ok`);
    assert.equal(res.url, `${srv.base}/ok`);
    assert.deepEqual(res.json(), { hello: 'world' });
  });

  test('drops credentials on a cross-origin redirect', async () => {
    const f = make({ allowHttp: true, allowHosts: ['127.0.0.1', 'public.test'], resolve: async () => [{ address: '127.0.0.1', family: 4 }] });
    const res = await f(`${srv.base}/to-echo-other-origin`, { headers: { Authorization: 'Bearer secret' } });
    assert.deepEqual(res.json(), { host: `public.test:${srv.port}`, auth: null });
  });

  test('does not follow redirects for POST', async () => {
    const f = make({ allowHttp: true, allowHosts: ['127.0.0.1'] });
    const res = await f(`${srv.base}/post-redirect`, { method: 'POST', body: 'code=secret' });
    assert.equal(res.status, 307);
  });

  test('stops after maxRedirects', async () => {
    const f = make({ allowHttp: true, allowHosts: ['127.0.0.1'], maxRedirects: 2 });
    await refused(f(`${srv.base}/loop`), 'too_many_redirects');
  });

  test('size limit: announced, streamed, and lying content-length', async () => {
    const f = make({ allowHttp: true, allowHosts: ['127.0.0.1'] });
    await refused(f(`${srv.base}/big`), 'too_large');
    await refused(f(`${srv.base}/big-chunked`), 'too_large');
    await refused(f(`${srv.base}/big`, { maxBytes: 1024 }), 'too_large');
    assert.equal((await f(`${srv.base}/big`, { maxBytes: 400 * 1024 })).body.length, 300 * 1024);
    // undici refuses a body longer than its content-length: a transport error, not a silent truncation.
    await refused(f(`${srv.base}/lying-length`, { maxBytes: 100 }), 'network_error');
  });

  test('timeout with a server that never answers, and one that stalls mid-body', async () => {
    const f = make({ allowHttp: true, allowHosts: ['127.0.0.1'], timeoutMs: 200 });
    const started = Date.now();
    await refused(f(`${srv.base}/hang`), 'timeout');
    await refused(f(`${srv.base}/slow-body`), 'timeout');
    assert.ok(Date.now() - started < 2000);
  });

  test("the caller's abort is rethrown as is", async () => {
    const f = make({ allowHttp: true, allowHosts: ['127.0.0.1'] });
    const controller = new AbortController();
    const reason = new Error('caller gave up');
    setTimeout(() => controller.abort(reason), 50);
    await assert.rejects(f(`${srv.base}/hang`, { signal: controller.signal }), (e) => e === reason);
  });

  test('https required unless allowHttp; bad URLs refused', async () => {
    const f = make({ allowHosts: ['127.0.0.1'] });
    await refused(f(`${srv.base}/ok`), 'https_required');
    await refused(f('ftp://example.com/'), 'bad_url');
    await refused(f('/relative'), 'bad_url');
    await refused(f('https://user:pw@example.com/'), 'bad_url');
  });

  test('dns failure and invalid JSON are typed', async () => {
    const f = make({
      allowHttp: true,
      allowHosts: ['127.0.0.1'],
      resolve: async () => {
        throw Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' });
      },
    });
    await refused(f('http://nowhere.test/'), 'dns_failed');
    const res = await f(`${srv.base}/not-json`);
    assert.throws(() => res.json(), (e) => e instanceof FetchRefusedError && e.reason === 'invalid_json');
  });

  test('options are validated at construction', () => {
    assert.throws(() => createGuardedFetch({ maxBytes: 0 }), TypeError);
    assert.throws(() => createGuardedFetch({ timeoutMs: -1 }), TypeError);
    assert.throws(() => createGuardedFetch({ maxRedirects: 1.5 }), TypeError);
  });
});
