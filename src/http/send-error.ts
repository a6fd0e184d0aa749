import type { ServerResponse } from 'node:http';
import { toHttpError, type HttpError } from './errors.ts';

/** How a route wants its errors rendered. */
export type ErrorStyle = 'oauth' | 'jsonrpc';

/**
 * Writes `error` as the response: RFC 6749 §5.2 JSON (`{ error, error_description }`) or, on the
 * MCP path, a JSON-RPC 2.0 error carrying the request's `id` (null when unknown).
 * 5xx descriptions are generic; the cause stays in the log. Does nothing if headers were sent.
 */
export function sendError(res: ServerResponse, thrown: unknown, style: ErrorStyle, rpcId?: string | number | null): HttpError {
  const error = toHttpError(thrown);
  if (res.headersSent) return error;
  const description = error.expose ? error.message : publicDescription(error);
  const body =
    style === 'jsonrpc'
      ? { jsonrpc: '2.0', id: rpcId ?? null, error: { code: error.rpcCode, message: description, data: { error: error.code } } }
      : { error: error.code, error_description: description };
  const payload = JSON.stringify(body);
  res.writeHead(error.status, {
    ...error.headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
  });
  res.end(payload);
  return error;
}

function publicDescription(error: HttpError): string {
  switch (error.code) {
    case 'bad_gateway':
    case 'gateway_timeout':
    case 'service_unavailable':
    case 'temporarily_unavailable':
      return error.message; // written by us for the client, never an upstream's text
    default:
      return 'internal error';
  }
}
