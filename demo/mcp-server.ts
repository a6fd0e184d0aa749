/**
 * The demo MCP server: a small, real MCP server (the official SDK's `McpServer` behind its
 * Streamable HTTP transport) that `npm run demo` puts behind the gateway and the tests use as
 * an upstream. Stateful sessions, resumable SSE streams (an event store per session), a
 * standalone GET stream, and tools that exercise every direction of traffic:
 *
 * - `echo` and `add`: plain request/response;
 * - `slow_count`: progress notifications spaced `intervalMs` apart, then a result;
 * - `notify`: a log message on the call's stream and `notifications/resources/list_changed`
 *   on the session's standalone GET stream;
 * - `ask`: a server→client `elicitation/create` request in the middle of the call, whose
 *   answer becomes the result.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { ElicitResultSchema, isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { createMemoryEventStore } from './event-store.ts';

/** Options of {@link startDemoMcpServer}. */
export interface DemoMcpServerOptions {
  /** Interface to bind. Default `127.0.0.1` (the demo never listens beyond loopback). */
  host?: string;
  /** Port to bind; 0 (the default) picks a free one. */
  port?: number;
  /** Path of the MCP endpoint. Default `/mcp`. */
  path?: string;
  /** Sees every HTTP request before it is handled (tests record what reached the upstream). */
  onRequest?(req: IncomingMessage): void;
  /** SSE `retry:` hint sent in priming events, in ms (how soon a dropped client reconnects). Default: none. */
  retryIntervalMs?: number;
  /**
   * DNS-rebinding protection (MCP transport spec, security warning): refuse a `Host` or `Origin`
   * that is not loopback with 403. Default true: the demo binds to loopback.
   */
  localOnly?: boolean;
  /** Builds the MCP server of each new session. Default {@link createDemoMcpServer}; tests plug in others. */
  mcpServer?: () => McpServer;
}

/** One HTTP request as the demo server received it. */
export interface SeenRequest {
  method: string;
  /** Path and query as sent. */
  url: string;
  /** Header names lower-cased, as Node parses them. */
  headers: IncomingHttpHeaders;
}

/** A running demo server. */
export interface DemoMcpServer {
  /** The MCP endpoint, e.g. `http://127.0.0.1:40123/mcp`. */
  url: URL;
  /** Every request received, in order (headers exactly as they arrived). */
  seenRequests: SeenRequest[];
  /** Ids of the MCP sessions currently open. */
  sessionIds(): string[];
  /** Closes every session and the listener, and cuts open connections. */
  close(): Promise<void>;
}

const SERVER_INFO = { name: 'mcpgate-demo', version: '1.0.0' };
const LOOPBACK_HOST = /^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$/i;

/** Builds the MCP server of one session: its tools and its one resource. */
export function createDemoMcpServer(): McpServer {
  const server = new McpServer(SERVER_INFO, {
    capabilities: { logging: {} },
    instructions: 'A demo server behind mcpgate: try echo, add, slow_count, notify and ask.',
  });

  server.registerTool(
    'echo',
    { description: 'Returns the text it is given.', inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: 'text', text }] }),
  );

  server.registerTool(
    'add',
    { description: 'Adds two numbers.', inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }),
  );

  server.registerTool(
    'slow_count',
    {
      description: 'Counts to `to`, sending a progress notification every `intervalMs` milliseconds.',
      inputSchema: { to: z.number().int().min(1).max(1000).default(5), intervalMs: z.number().int().min(0).max(60_000).default(500) },
    },
    async ({ to, intervalMs }, extra) => {
      const progressToken = extra._meta?.progressToken;
      for (let i = 1; i <= to; i++) {
        await sleep(intervalMs, undefined, { signal: extra.signal }).catch(() => undefined);
        if (extra.signal.aborted) return { content: [{ type: 'text', text: `cancelled at ${i - 1}` }], isError: true };
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken, progress: i, total: to, message: `counted ${i} of ${to}` },
          });
        }
      }
      return { content: [{ type: 'text', text: `counted to ${to}` }] };
    },
  );

  server.registerTool(
    'notify',
    { description: 'Sends a log message on this call and a resource-list change on the standalone stream.', inputSchema: { message: z.string().default('hello from the demo server') } },
    async ({ message }, extra) => {
      await extra.sendNotification({ method: 'notifications/message', params: { level: 'info', logger: 'demo', data: message } });
      // No related request: the SDK sends it on the session's standalone GET stream.
      await server.server.sendResourceListChanged();
      return { content: [{ type: 'text', text: 'sent' }] };
    },
  );

  server.registerTool(
    'ask',
    { description: 'Asks the user a question (elicitation) and returns the answer.', inputSchema: { question: z.string().default('What is your favourite number?') } },
    async ({ question }, extra) => {
      const answer = await extra.sendRequest(
        {
          method: 'elicitation/create',
          params: {
            mode: 'form',
            message: question,
            requestedSchema: { type: 'object', properties: { answer: { type: 'string', title: 'Answer' } }, required: ['answer'] },
          },
        },
        ElicitResultSchema,
      );
      if (answer.action !== 'accept') return { content: [{ type: 'text', text: `the user chose ${answer.action}` }] };
      return { content: [{ type: 'text', text: `you answered: ${String(answer.content?.answer)}` }] };
    },
  );

  server.registerResource(
    'greeting',
    'demo://greeting',
    { description: 'A static text resource.', mimeType: 'text/plain' },
    async (uri) => ({ contents: [{ uri: uri.href, mimeType: 'text/plain', text: 'Hello from behind mcpgate.' }] }),
  );

  return server;
}

/**
 * Starts the demo server on loopback. Resolves once it is listening.
 * Sessions are stateful (the SDK's `Mcp-Session-Id`); each has its own event store so a client
 * can resume a dropped stream with `Last-Event-ID`; DELETE ends a session and a later request
 * with its id gets 404, as the transport spec requires.
 */
export async function startDemoMcpServer(options: DemoMcpServerOptions = {}): Promise<DemoMcpServer> {
  const path = options.path ?? '/mcp';
  const localOnly = options.localOnly ?? true;
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  const seenRequests: SeenRequest[] = [];

  const http = createServer((req, res) => {
    seenRequests.push({ method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers } });
    options.onRequest?.(req);
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) sendRpcError(res, 500, -32603, `internal error: ${(error as Error).message}`);
      else res.destroy();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (new URL(req.url ?? '/', 'http://localhost').pathname !== path) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (localOnly && !isLocal(req.headers)) {
      sendRpcError(res, 403, -32000, 'Forbidden: Host or Origin is not loopback');
      return;
    }
    const sessionId = req.headers['mcp-session-id'];
    if (typeof sessionId === 'string') {
      const transport = sessions.get(sessionId);
      if (!transport) {
        sendRpcError(res, 404, -32001, 'Session not found');
        return;
      }
      await transport.handleRequest(req, res);
      return;
    }
    if (req.method !== 'POST') {
      sendRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
      return;
    }
    let body: unknown;
    try {
      body = JSON.parse(await readText(req));
    } catch {
      sendRpcError(res, 400, -32700, 'Parse error');
      return;
    }
    if (!isInitializeRequest(body)) {
      sendRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
      return;
    }
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      eventStore: createMemoryEventStore(),
      retryInterval: options.retryIntervalMs,
      onsessioninitialized: (id) => void sessions.set(id, transport),
    });
    transport.onclose = () => {
      if (transport.sessionId) sessions.delete(transport.sessionId);
    };
    await (options.mcpServer ?? createDemoMcpServer)().connect(transport);
    await transport.handleRequest(req, res, body);
  }

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      http.off('error', reject);
      resolve();
    });
  });
  const address = http.address();
  if (!address || typeof address !== 'object') throw new Error('demo MCP server did not bind a TCP port');
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  return {
    url: new URL(`http://${host}:${address.port}${path}`),
    seenRequests,
    sessionIds: () => [...sessions.keys()],
    async close() {
      await Promise.all([...sessions.values()].map((t) => t.close().catch(() => undefined)));
      sessions.clear();
      await new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      });
    },
  };
}

function isLocal(headers: IncomingHttpHeaders): boolean {
  if (headers.host !== undefined && !LOOPBACK_HOST.test(headers.host)) return false;
  const origin = headers.origin;
  if (origin === undefined) return true;
  try {
    return LOOPBACK_HOST.test(new URL(origin).host);
  } catch {
    return false;
  }
}

async function readText(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 4 * 1024 * 1024) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function sendRpcError(res: ServerResponse, status: number, code: number, message: string): void {
  const body = JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
}
