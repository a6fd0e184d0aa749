/**
 * A bare `node:http` upstream for tests that need to see or shape the exact bytes: it records
 * every request (headers as received, body, whether the gateway went away early) and answers
 * with the handler the test gives it.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/** One request as the upstream received it. */
export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** Names and values in wire order and casing. */
  rawHeaders: string[];
  body: Buffer;
  /** Set when the response was closed before it finished: the gateway aborted the request. */
  aborted: boolean;
  /** Set when the response finished normally. */
  finished: boolean;
}

/** Answers one request; `body` has been read whole. */
export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest) => void | Promise<void>;

/** A running test upstream. */
export interface RawUpstream {
  /** `http://127.0.0.1:<port>/mcp`. */
  url: URL;
  server: Server;
  requests: RecordedRequest[];
  /** Stops listening and cuts every connection. */
  close(): Promise<void>;
}

/**
 * A minimal MCP-shaped answer: POST → JSON `{ jsonrpc, id, result: { ok: true } }` (or 202 for a
 * notification), GET → an SSE stream with one event that then ends, DELETE → 200.
 * Every response sets a cookie, which must never reach the agent.
 */
export const answerLikeMcp: UpstreamHandler = (req, res, recorded) => {
  const common = { 'set-cookie': 'upstream_session=should-not-leak; Path=/', 'mcp-session-id': String(req.headers['mcp-session-id'] ?? 'upstream-session-1') };
  if (req.method === 'GET') {
    res.writeHead(200, { ...common, 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.end('id: 1\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}\n\n');
    return;
  }
  if (req.method === 'DELETE') {
    res.writeHead(200, common).end();
    return;
  }
  let id: unknown;
  try {
    id = (JSON.parse(recorded.body.toString('utf8')) as { id?: unknown }).id;
  } catch {
    id = undefined;
  }
  if (id === undefined) {
    res.writeHead(202, common).end();
    return;
  }
  const payload = JSON.stringify({ jsonrpc: '2.0', id, result: { ok: true } });
  res.writeHead(200, { ...common, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }).end(payload);
};

/** Starts an upstream on a free loopback port. */
export async function startRawUpstream(handler: UpstreamHandler = answerLikeMcp): Promise<RawUpstream> {
  const requests: RecordedRequest[] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
    const recorded: RecordedRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: { ...req.headers },
      rawHeaders: [...req.rawHeaders],
      body: Buffer.concat(chunks),
      aborted: false,
      finished: false,
    };
    requests.push(recorded);
    res.once('close', () => {
      if (res.writableFinished) recorded.finished = true;
      else recorded.aborted = true;
    });
    try {
      await handler(req, res, recorded);
    } catch {
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: new URL(`http://127.0.0.1:${port}/mcp`),
    server,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Polls `condition` every 10 ms until it holds; fails after `timeoutMs` (a bound, not a measurement). */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
