import type { IncomingMessage } from 'node:http';
import type { BodyBudget } from './body-budget.ts';
import { InvalidRequest, PayloadTooLarge } from './errors.ts';

/**
 * Reads a request body whole, refusing more than `limit` bytes with 413 (checked against
 * Content-Length up front and again while reading, for chunked bodies).
 * MCP POST bodies are single JSON-RPC messages; buffering them is what lets the gateway learn
 * the request id and replay the request once after an upstream 401.
 *
 * With a `budget`, the bytes are booked there before they are buffered (the declared length up
 * front, a chunked body chunk by chunk); a booking refused rejects with its 503 and books nothing.
 * The caller owns `body.length` booked bytes once this resolves and releases them when done.
 */
export function readBody(req: IncomingMessage, limit: number, budget?: BodyBudget): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  const hasLength = req.headers['content-length'] !== undefined && Number.isFinite(declared);
  if (hasLength && declared > limit) return Promise.reject(tooLarge(limit));
  // 'data'/'end' listeners rather than `for await`: an async iterator per request costs more
  // than the rest of the read (bench/README.md).
  // A request destroyed before this call (the client left while an earlier step awaited) emits
  // nothing more: refuse it now, as the iterator did, instead of waiting for ever.
  if (req.destroyed) {
    const cause = Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
    return Promise.reject(new InvalidRequest('the request body ended early', { cause }));
  }
  let booked = 0;
  if (budget && hasLength && declared > 0) {
    try {
      budget.reserve(declared);
    } catch (error) {
      return Promise.reject(error);
    }
    booked = declared;
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const fail = (error: unknown) => {
      done();
      if (booked > 0) budget!.release(booked);
      booked = 0;
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.pause();
        fail(tooLarge(limit));
        return;
      }
      if (budget && size > booked) {
        try {
          budget.reserve(size - booked);
        } catch (error) {
          req.pause();
          fail(error);
          return;
        }
        booked = size;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      // The caller owns exactly the bytes it holds.
      if (booked > size) budget!.release(booked - size);
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    // A client that hangs up mid-body ('aborted' error, or a close before the end) is the client's
    // doing, not a server failure: a 4xx, so the front door does not log it as an error
    // (a POST /{name}/mcp cut after its headers was logged 'request failed' at level error).
    const onError = (error: Error) => fail(new InvalidRequest('the request body ended early', { cause: error }));
    const onClose = () =>
      fail(new InvalidRequest('the request body ended early', { cause: Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }) }));
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
  // The rest of the body stays unread (or is discarded, see discardBody): close the connection after answering.
  return new PayloadTooLarge(`request body exceeds ${limit} bytes`, { headers: { connection: 'close' } });
}

/** Bounds of {@link discardBody}. */
export interface DiscardLimits {
  /** Bytes read and thrown away at most, counted from the call. */
  maxBytes: number;
  /** Time spent at most, in milliseconds. */
  timeoutMs: number;
}

/**
 * Reads the rest of a request body and throws it away, within `limits`; resolves true when the
 * body ended, false when a bound was reached or the client went away (the caller then answers and
 * closes the connection anyway).
 *
 * Why: an HTTP/1.1 client such as Node's fetch (undici, under the MCP SDKs) writes its whole body
 * before it reads the answer. A server that answers 413 and closes while the body is still coming
 * makes that client fail with EPIPE / ECONNRESET, and the agent never learns it was a 413
 * (RFC 9112 §9.6: close in stages, reading on for a while). A body larger than `maxBytes`, or
 * slower than `timeoutMs`, is cut as before. Nothing is buffered.
 */
export function discardBody(req: IncomingMessage, limits: DiscardLimits): Promise<boolean> {
  if (req.readableEnded) return Promise.resolve(true);
  if (req.destroyed) return Promise.resolve(false);
  // A declared length we would never finish reading is not worth starting on (a body refused by
  // its Content-Length was not read at all).
  if (Number(req.headers['content-length']) > limits.maxBytes) return Promise.resolve(false);
  return new Promise((resolve) => {
    let read = 0;
    const finish = (ended: boolean) => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onGone);
      req.off('close', onGone);
      if (!ended) req.pause();
      resolve(ended);
    };
    const onData = (chunk: Buffer) => {
      read += chunk.length;
      if (read > limits.maxBytes) finish(false);
    };
    const onEnd = () => finish(true);
    const onGone = () => finish(false);
    const timer = setTimeout(() => finish(false), limits.timeoutMs);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onGone);
    req.on('close', onGone);
    req.resume();
  });
}
