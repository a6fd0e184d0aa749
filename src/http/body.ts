import type { IncomingMessage } from 'node:http';
import { PayloadTooLarge } from './errors.ts';

/**
 * Reads a request body whole, refusing more than `limit` bytes with 413 (checked against
 * Content-Length up front and again while reading, for chunked bodies).
 * MCP POST bodies are single JSON-RPC messages; buffering them is what lets the gateway learn
 * the request id and replay the request once after an upstream 401.
 */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw tooLarge(limit);
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}

function tooLarge(limit: number) {
  // The rest of the body stays unread: close the connection after answering.
  return new PayloadTooLarge(`request body exceeds ${limit} bytes`, { headers: { connection: 'close' } });
}
