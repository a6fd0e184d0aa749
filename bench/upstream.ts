import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serveParent } from './children.ts';

/**
 * The benchmark's upstream: the least an MCP server can do, so the figures measure the gateway.
 * POST answers a JSON-RPC request with a small JSON result (its id echoed); GET answers with an
 * SSE stream whose first event is written at once, then ends (`?hold` keeps it open, idle).
 */

const EVENT = 'id: 1\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"ready"}}\n\n';
const held = new Set<ServerResponse>();

const server = createServer((req, res) => {
  if (req.method === 'POST') {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      let id: unknown = null;
      try {
        id = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id?: unknown }).id ?? null;
      } catch {
        // a malformed body still gets an answer: the bench only sends good ones
      }
      const body = JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'hello from the bench upstream' }] } });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    return;
  }
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(EVENT);
    if (req.url?.includes('hold')) {
      held.add(res);
      res.once('close', () => held.delete(res));
    } else {
      res.end();
    }
    return;
  }
  res.writeHead(405).end();
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 0;
server.requestTimeout = 0;

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  serveParent({ heldStreams: () => held.size }, `http://127.0.0.1:${port}`);
});
