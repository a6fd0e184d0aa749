import { InvalidRequest, ParseError } from '../http/errors.ts';

/** What the gateway learns from a POST body; the body itself is forwarded byte for byte. */
export interface RpcInfo {
  /** The request id (requests only); `undefined` for notifications, responses and batches. */
  id: string | number | undefined;
  /** The method of a single request or notification. */
  method: string | undefined;
  /** True when the body is a JSON-RPC batch (2025-03-26). */
  batch: boolean;
  /** `params.capabilities` of an `initialize` request. */
  capabilities: Record<string, unknown> | undefined;
  /** `params.name` of a `tools/call`. */
  toolName: string | undefined;
}

/**
 * Parses a JSON-RPC message (or batch) only as far as the gateway needs.
 * Throws ParseError (-32700) for bytes that are not JSON and InvalidRequest (-32600) for JSON
 * that is not a JSON-RPC message.
 */
export function inspectRpc(body: Buffer): RpcInfo {
  let message: unknown;
  try {
    message = JSON.parse(body.toString('utf8'));
  } catch {
    throw new ParseError('request body is not valid JSON');
  }
  if (Array.isArray(message)) {
    if (message.length === 0 || !message.every(isMessage)) throw new InvalidRequest('invalid JSON-RPC batch');
    return { id: undefined, method: undefined, batch: true, capabilities: undefined, toolName: undefined };
  }
  if (!isMessage(message)) throw new InvalidRequest('body is not a JSON-RPC 2.0 message');
  const id = typeof message.id === 'string' || typeof message.id === 'number' ? message.id : undefined;
  const method = typeof message.method === 'string' ? message.method : undefined;
  const params = isObject(message.params) ? message.params : undefined;
  return {
    id: method !== undefined ? id : undefined,
    method,
    batch: false,
    capabilities: method === 'initialize' && params && isObject(params.capabilities) ? params.capabilities : undefined,
    toolName: method === 'tools/call' && params && typeof params.name === 'string' ? params.name : undefined,
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isMessage(value: unknown): value is Record<string, unknown> {
  return isObject(value) && value.jsonrpc === '2.0';
}
