import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serveParent } from './children.ts';

/**
 * The benchmark's upstream: the least an MCP server can do, so the figures measure the gateway.
 * POST answers a JSON-RPC request with a small JSON result (its id echoed), and `initialize` with
 * the one MCP session id the load generator uses (bench/load.ts); GET answers with an
 * SSE stream whose first event is written at once, then ends (`?hold` keeps it open, idle).
 */

const EVENT = 'id: 1\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"ready"}}\n\n';
const held = new Set<ServerResponse>();
/** The MCP session every benchmark request names (bench/load.ts). */
const SESSION_ID = '3f2c9a7e-bench-session-0001';

const server = createServer((req, res) => {
  if (req.method === 'POST') {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      let message: { id?: unknown; method?: unknown } = {};
      try {
        message = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof message;
      } catch {
        // a malformed body still gets an answer: the bench only sends good ones
      }
      const id = message.id ?? null;
      if (message.method === 'initialize') {
        // As a stateful MCP server does: the session the load generator then names on every request.
        const body = JSON.stringify({ jsonrpc: '2.0', id, result: { protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'bench', version: '1' } } });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'mcp-session-id': SESSION_ID });
        res.end(body);
        return;
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
