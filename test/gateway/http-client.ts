/**
 * A raw `node:http` client for gateway tests: full control over the headers sent (hop-by-hop
 * ones included) and the source address, and the whole answer collected.
 */
import { request, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';

/** One answer, read whole. */
export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** Options of {@link send}. */
export interface SendOptions {
  method?: string;
  headers?: OutgoingHttpHeaders;
  body?: string | Buffer;
  /** Source address to connect from (any 127.x address works on Linux). */
  localAddress?: string;
}

/** Sends one request on a fresh connection and reads the whole response. */
export function send(url: URL, options: SendOptions = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? 'GET', headers: options.headers, localAddress: options.localAddress, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** A JSON-RPC request body. */
export function rpc(id: string | number, method: string, params: Record<string, unknown> = {}): string {
  return JSON.stringify({ jsonrpc: '2.0', id, method, params });
}

/** Headers an MCP client sends with a POST. */
export const MCP_POST_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' } as const;
