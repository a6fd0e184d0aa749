/**
 * The agent side of the gateway tests: the official SDK `Client` over its Streamable HTTP
 * transport, with a fetch that records every exchange and can cut the open POST streams
 * (a dropped connection, as a flaky network would do it).
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { ClientCapabilities } from '@modelcontextprotocol/sdk/types.js';

/** One HTTP exchange the agent made, recorded when the response headers arrived. */
export interface AgentExchange {
  method: string;
  status: number;
  contentType: string;
  lastEventId: string | undefined;
}

/** A connected agent. */
export interface Agent {
  client: Client;
  transport: StreamableHTTPClientTransport;
  exchanges: AgentExchange[];
  /** Aborts every POST response stream still being read: the client sees its connection drop. */
  dropPostStreams(): number;
  close(): Promise<void>;
}

/** Options of {@link connectAgent}. */
export interface ConnectAgentOptions {
  capabilities?: ClientCapabilities;
}

/** Connects an SDK client to `url` (initialize + initialized; the SDK then opens its GET stream). */
export async function connectAgent(url: URL, options: ConnectAgentOptions = {}): Promise<Agent> {
  const exchanges: AgentExchange[] = [];
  const openPostStreams = new Set<AbortController>();

  const recordingFetch = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const method = (init.method ?? 'GET').toUpperCase();
    const cut = new AbortController();
    const signal = init.signal ? AbortSignal.any([init.signal, cut.signal]) : cut.signal;
    const response = await fetch(input, { ...init, signal });
    const contentType = response.headers.get('content-type') ?? '';
    exchanges.push({ method, status: response.status, contentType, lastEventId: new Headers(init.headers).get('last-event-id') ?? undefined });
    if (method === 'POST' && contentType.startsWith('text/event-stream') && response.body) {
      openPostStreams.add(cut);
      // Forget the controller once the stream is fully read, however it ends.
      const tracked = response.body.pipeThrough(
        new TransformStream({ flush: () => void openPostStreams.delete(cut) }),
      );
      return new Response(tracked, { status: response.status, statusText: response.statusText, headers: response.headers });
    }
    return response;
  };

  const transport = new StreamableHTTPClientTransport(url, {
    fetch: recordingFetch,
    reconnectionOptions: { initialReconnectionDelay: 50, maxReconnectionDelay: 500, reconnectionDelayGrowFactor: 1.5, maxRetries: 5 },
  });
  const client = new Client({ name: 'mcpgate-test-agent', version: '1.0.0' }, { capabilities: options.capabilities ?? {} });
  await client.connect(transport);

  return {
    client,
    transport,
    exchanges,
    dropPostStreams() {
      const n = openPostStreams.size;
      for (const controller of openPostStreams) controller.abort(new Error('test: connection dropped'));
      openPostStreams.clear();
      return n;
    },
    close: () => client.close(),
  };
}
