import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool, type Dispatcher } from 'undici';
import { serveParent } from './children.ts';

/**
 * The reference point of the targets: plain undici forwarding with nothing else (no routing,
 * header policy, access log, metrics or request ids). It shows what this machine allows a
 * Node proxy, so the gateway's own costs can be told from the cost of being a proxy at all.
 *
 * Usage: node bench/plain-proxy.ts <upstream URL>
 */

const target = new URL(process.argv[2] ?? '');
const pool = new Pool(target.origin, { keepAliveTimeout: 30_000 });
const SKIP_REQUEST = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive']);
const SKIP_RESPONSE = new Set(['connection', 'transfer-encoding', 'keep-alive']);

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const headers: Record<string, string | string[]> = {};
    for (const name in req.headers) if (!SKIP_REQUEST.has(name)) headers[name] = req.headers[name]!;
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart() {},
      onResponseStart(_c, status, upstreamHeaders) {
        const out: Record<string, string | string[]> = {};
        for (const name in upstreamHeaders) if (!SKIP_RESPONSE.has(name)) out[name] = upstreamHeaders[name]!;
        res.writeHead(status, out);
      },
      onResponseData(c, chunk) {
        if (!res.write(chunk)) {
          c.pause();
          res.once('drain', () => c.resume());
        }
      },
      onResponseEnd() {
        res.end();
      },
      onResponseError() {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      },
    };
    pool.dispatch(
      { origin: target.origin, path: target.pathname + (req.url?.includes('?') ? req.url.slice(req.url.indexOf('?')) : ''), method: req.method as Dispatcher.HttpMethod, headers, body: chunks.length ? Buffer.concat(chunks) : undefined },
      handler,
    );
  });
});

// A clean exit on SIGTERM, so `--cpu-prof` can write its profile.
process.once('SIGTERM', () => process.exit(0));
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  serveParent(
    {
      /** process.memoryUsage() in bytes, after a full collection when `gc` is set (needs --expose-gc): the idle-stream figure of the reference. */
      memory: (args) => {
        if (args.gc && typeof globalThis.gc === 'function') {
          globalThis.gc();
          globalThis.gc();
        }
        return process.memoryUsage();
      },
    },
    `http://127.0.0.1:${port}/bench/mcp`,
  );
});
