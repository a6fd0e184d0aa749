import type { IncomingMessage } from 'node:http';
import { InvalidRequest, PayloadTooLarge } from './errors.ts';

/**
 * Reads a request body whole, refusing more than `limit` bytes with 413 (checked against
 * Content-Length up front and again while reading, for chunked bodies).
 * MCP POST bodies are single JSON-RPC messages; buffering them is what lets the gateway learn
 * the request id and replay the request once after an upstream 401.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge(limit));
  // 'data'/'end' listeners rather than `for await`: an async iterator per request costs more
  // than the rest of the read (bench/README.md).
  // A request destroyed before this call (the client left while an earlier step awaited) emits
  // nothing more: refuse it now, as the iterator did, instead of waiting for ever.
  if (req.destroyed) {
    const cause = Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
    return Promise.reject(new InvalidRequest('the request body ended early', { cause }));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        done();
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    // A client that hangs up mid-body ('aborted' error, or a close before the end) is the client's
    // doing, not a server failure: a 4xx, so the front door does not log it as an error
    // (a POST /{name}/mcp cut after its headers was logged 'request failed' at level error).
    const onError = (error: Error) => {
      done();
      reject(new InvalidRequest('the request body ended early', { cause: error }));
    };
    const onClose = () => {
      done();
      reject(new InvalidRequest('the request body ended early', { cause: Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }) }));
    };
    const done = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

function tooLarge(limit: number) {
  // The rest of the body stays unread: close the connection after answering.
  return new PayloadTooLarge(`request body exceeds ${limit} bytes`, { headers: { connection: 'close' } });
}
