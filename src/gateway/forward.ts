import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { UpstreamRejection } from '../credentials/types.ts';
import { agentResponseHeaders, isEventStream, relocate, type UpstreamPlace } from './headers.ts';
import type { ResponseObserver } from './response-tap.ts';

/** One request to send upstream and where its answer goes. */
export interface ForwardRequest {
  dispatcher: Dispatcher;
  origin: string;
  path: string;
  method: string;
  headers: Record<string, string | string[]>;
  body: Buffer | undefined;
  res: ServerResponse;
  /** Aborted when the agent goes away: the upstream request is aborted with it. */
  signal: AbortSignal;
  /** Time allowed until the upstream's response headers, in ms; the body (an SSE stream) has none. */
  headersTimeoutMs: number;
  /** Where the upstream lives and where we serve it: its `Location` headers are mapped to our path (headers.ts `relocate`). */
  place: UpstreamPlace;
  /**
   * Return true to hold this response back instead of streaming it: its body is collected up to
   * 64 KiB and for at most `heldBodyTimeoutMs`, then the upstream request is cut and what arrived is kept.
   */
  hold(status: number, headers: IncomingHttpHeaders): boolean;
  /** Writes an SSE comment after this many ms without data, at event boundaries only. */
  sseKeepAliveMs?: number;
  /** Called when an SSE response starts and when it ends (open-stream gauge). */
  onStream?(open: boolean): void;
  /**
   * Called when the upstream broke off a response already under way (the agent's response is then
   * ended or cut), before the agent's response ends: its access-log line is written when it closes,
   * which can be before `forward` resolves.
   */
  onCut?(): void;
  /** Called when an SSE response starts, with a way to add our own events to it (notifications/elicitation/complete). */
  onSse?(injector: SseInjector): void;
  /** Time allowed for a held body after its headers, in ms. Default 5000. */
  heldBodyTimeoutMs?: number;
  /**
   * Called with a response's status and headers before any of it reaches the agent (not for held
   * responses). A returned promise pauses the upstream until it settles: the agent sees nothing
   * until then, so what it writes (the session's capabilities and owner, learned from `initialize`)
   * is in the store before the agent can send its next request, to any replica. A rejection aborts the
   * upstream request and `forward` rejects with it (a store failure: 503).
   */
  beforeResponse?(status: number, headers: IncomingHttpHeaders): Promise<void> | undefined;
  /**
   * When aborted (the gateway is shutting down), an SSE response ends at the next event boundary,
   * never inside an event, and the upstream request is aborted: the agent reconnects (to another
   * replica) with the `Last-Event-ID` of the last whole event it received. Other responses are not affected.
   */
  endStream?: AbortSignal;
  /**
   * Sees a streamed (not held) response as it is written to the agent: its head, a copy of each
   * chunk, and its end before the agent's response ends. It never delays a byte (the audit's
   * upstream status, tool names and tool errors).
   */
  observe?: ResponseObserver;
}

/** Adds whole SSE events to a forwarded stream without splitting the upstream's events. */
export interface SseInjector {
  /** Writes `event` (one or more complete SSE events) at the next event boundary; a no-op once the stream ended. */
  inject(event: string): void;
}

export type ForwardOutcome =
  | { kind: 'sent'; status: number; stream: boolean; bytes: number; cut: boolean }
  | { kind: 'held'; rejection: UpstreamRejection };

/**
 * The upstream failed before sending response headers, or answered with a redirect to somewhere
 * we do not serve (`redirect`). `timeout` maps to 504, the rest to 502.
 */
export class UpstreamError extends Error {
  override name = 'UpstreamError';
  readonly kind: 'timeout' | 'unreachable' | 'aborted' | 'redirect';
  constructor(kind: UpstreamError['kind'], cause: unknown) {
    super(`upstream request failed: ${kind}`, { cause });
    this.kind = kind;
  }
}

const HELD_BODY_LIMIT = 64 * 1024;
const HELD_BODY_TIMEOUT_MS = 5000;
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * Sends one request upstream with undici's `dispatch` and streams the answer to the agent as it
 * arrives: no intermediate buffering, backpressure by pausing the upstream when the
 * agent's socket is full, the upstream aborted when the agent leaves, a cut SSE stream ended
 * cleanly so the agent can resume with Last-Event-ID.
 */
export function forward(request: ForwardRequest): Promise<ForwardOutcome> {
  const { res, signal } = request;
  return new Promise<ForwardOutcome>((resolve, reject) => {
    let mode: 'waiting' | 'held' | 'deferred' | 'streaming' = 'waiting';
    // What the upstream sent while `beforeResponse` was pending (undici may deliver a chunk parsed before the pause).
    let deferred: { chunks: Buffer[]; ended: boolean } | undefined;
    let status = 0;
    let held: { headers: IncomingHttpHeaders; chunks: Buffer[]; size: number } | undefined;
    let stream = false;
    let bytes = 0;
    let atBoundary = true;
    let tail = Buffer.alloc(0);
    let lastWrite = Date.now();
    let keepAlive: NodeJS.Timeout | undefined;
    let heldTimer: NodeJS.Timeout | undefined;
    let settled = false;
    /** Asked to end (shutdown): the stream ends at the next event boundary. */
    let ending = false;
    // Our own events wait here while the upstream is in the middle of one of its events.
    const pending: string[] = [];
    const flushPending = () => {
      while (pending.length > 0 && !res.writableEnded && !res.destroyed) {
        res.write(pending.shift()!);
        lastWrite = Date.now();
      }
    };

    const finish = (outcome: ForwardOutcome | Error) => {
      if (settled) return;
      settled = true;
      if (keepAlive) clearInterval(keepAlive);
      if (heldTimer) clearTimeout(heldTimer);
      signal.removeEventListener('abort', onAbort);
      request.endStream?.removeEventListener('abort', onEndStream);
      if (stream) request.onStream?.(false);
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    let controller: Dispatcher.DispatchController | undefined;
    const onAbort = () => controller?.abort(new Error('agent closed the connection'));
    const onEndStream = () => {
      ending = true;
      if (atBoundary) endAtBoundary();
    };
    /**
     * Settles a held response with what arrived. An upstream that sends a 401's headers and then
     * trickles or never ends its body must not hold the agent's request (and a replay) for ever,
     * nor make us read without end: past the time or size bound the upstream request is cut.
     */
    const finishHeld = (cut: boolean) => {
      finish({ kind: 'held', rejection: { status, headers: held!.headers, body: Buffer.concat(held!.chunks).subarray(0, HELD_BODY_LIMIT) } });
      if (cut) controller?.abort(new Error('held upstream body cut at its bound'));
    };
    /** Ends the agent's stream after a whole event, then lets go of the upstream. */
    const endAtBoundary = () => {
      if (settled) return;
      flushPending();
      if (!res.writableEnded && !res.destroyed) res.end();
      finish({ kind: 'sent', status, stream, bytes, cut: false });
      controller?.abort(new Error('the gateway is shutting down'));
    };

    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
        if (signal.aborted) c.abort(new Error('agent closed the connection'));
        else signal.addEventListener('abort', onAbort, { once: true });
      },
      onResponseStart(c, statusCode, headers) {
        status = statusCode;
        if (statusCode >= 300 && statusCode < 400 && typeof headers.location === 'string' && relocate(headers.location, request.place) === undefined) {
          // A redirect elsewhere would send the agent, and the token many clients repeat on
          // redirects, to a host we do not vouch for, or around us: refused as a 502 instead.
          finish(new UpstreamError('redirect', new Error(`upstream answered ${statusCode} with a Location outside its own path`)));
          c.abort(new Error('upstream redirected elsewhere'));
          return;
        }
        if (request.hold(statusCode, headers)) {
          mode = 'held';
          held = { headers, chunks: [], size: 0 };
          heldTimer = setTimeout(() => finishHeld(true), request.heldBodyTimeoutMs ?? HELD_BODY_TIMEOUT_MS);
          heldTimer.unref();
          return;
        }
        const before = request.beforeResponse?.(statusCode, headers);
        if (!before) return startResponse(statusCode, headers);
        mode = 'deferred';
        deferred = { chunks: [], ended: false };
        c.pause();
        before.then(
          () => {
            if (settled) return;
            const queued = deferred!;
            deferred = undefined;
            startResponse(statusCode, headers);
            for (const chunk of queued.chunks) handler.onResponseData!(c, chunk);
            if (queued.ended) handler.onResponseEnd!(c, {});
            else if (!res.writableNeedDrain) c.resume();
          },
          (error: unknown) => {
            finish(error instanceof Error ? error : new Error(String(error)));
            c.abort(error instanceof Error ? error : new Error(String(error)));
          },
        );
      },
      onResponseData(c, chunk) {
        if (mode === 'deferred') {
          deferred?.chunks.push(chunk);
          return;
        }
        if (mode === 'held') {
          if (settled) return;
          held!.chunks.push(chunk);
          held!.size += chunk.length;
          if (held!.size >= HELD_BODY_LIMIT) finishHeld(true);
          return;
        }
        if (settled) return;
        if (ending && stream) {
          // Only the rest of the event under way goes out; what follows it is left to the resumed stream.
          const end = eventEnd(tail, chunk);
          if (end >= 0) {
            request.observe?.data(chunk.subarray(0, end));
            res.write(chunk.subarray(0, end));
            bytes += end;
            atBoundary = true;
            return endAtBoundary();
          }
        }
        bytes += chunk.length;
        lastWrite = Date.now();
        if (stream) {
          // An event's closing blank line may be split across chunks: judge the last bytes of the stream.
          tail = Buffer.concat([tail, chunk.subarray(-4)]).subarray(-4);
          atBoundary = endsEvent(tail);
        }
        request.observe?.data(chunk);
        const flowing = res.write(chunk);
        if (atBoundary && pending.length > 0) flushPending();
        if (!flowing) {
          c.pause();
          res.once('drain', () => c.resume());
        }
      },
      onResponseEnd() {
        if (settled) return;
        if (mode === 'deferred') {
          deferred!.ended = true;
          return;
        }
        if (mode === 'held') {
          finishHeld(false);
          return;
        }
        request.observe?.end();
        if (atBoundary) flushPending();
        res.end();
        finish({ kind: 'sent', status, stream, bytes, cut: false });
      },
      onResponseError(_c, error) {
        if (settled) return;
        if (mode === 'deferred' || mode === 'waiting' || mode === 'held') {
          const kind = signal.aborted ? 'aborted' : TIMEOUT_CODES.has((error as { code?: string }).code ?? '') ? 'timeout' : 'unreachable';
          finish(new UpstreamError(kind, error));
          return;
        }
        // Headers were sent: the agent already has a status. End an SSE stream cleanly at the
        // transport level (it will reconnect with Last-Event-ID); cut anything else so a
        // truncated JSON body is never mistaken for a complete one.
        const cut = !signal.aborted;
        if (cut) request.onCut?.();
        if (!res.writableEnded && !res.destroyed) {
          if (stream) res.end();
          else res.destroy();
        }
        finish({ kind: 'sent', status, stream, bytes, cut });
      },
    };

    /** The response goes to the agent from here on: status and headers first. */
    function startResponse(statusCode: number, headers: IncomingHttpHeaders): void {
      mode = 'streaming';
      stream = isEventStream(headers);
      request.observe?.head(statusCode, headers);
      res.writeHead(statusCode, agentResponseHeaders(headers, request.place));
      if (stream) {
        // Send headers now: an idle GET stream must reach the agent before its first event.
        res.flushHeaders();
        request.onStream?.(true);
        if (request.sseKeepAliveMs) startKeepAlive(request.sseKeepAliveMs);
        request.onSse?.({
          inject(event) {
            if (settled || res.writableEnded || res.destroyed) return;
            pending.push(event);
            if (atBoundary) flushPending();
          },
        });
        if (request.endStream?.aborted) onEndStream();
        else request.endStream?.addEventListener('abort', onEndStream, { once: true });
      }
    }

    function startKeepAlive(intervalMs: number) {
      keepAlive = setInterval(() => {
        if (atBoundary && Date.now() - lastWrite >= intervalMs && !res.writableEnded) {
          res.write(': keep-alive\n\n');
          lastWrite = Date.now();
        }
      }, Math.max(250, Math.floor(intervalMs / 2)));
      keepAlive.unref();
    }

    request.dispatcher.dispatch(
      {
        origin: request.origin,
        path: request.path,
        method: request.method as Dispatcher.HttpMethod,
        headers: request.headers,
        body: request.body,
        headersTimeout: request.headersTimeoutMs,
        bodyTimeout: 0,
      },
      handler,
    );
  });
}

/**
 * Where the first event ending in `chunk` ends (the index just past its blank line), or -1.
 * `tail` is the last bytes written before `chunk`, since a blank line may straddle the two.
 */
function eventEnd(tail: Buffer, chunk: Buffer): number {
  const joined = Buffer.concat([tail, chunk]);
  for (let i = tail.length; i < joined.length; i++) {
    if (joined[i] !== 0x0a) continue;
    if (i >= 1 && joined[i - 1] === 0x0a) return i + 1 - tail.length;
    if (i >= 3 && joined[i - 1] === 0x0d && joined[i - 2] === 0x0a && joined[i - 3] === 0x0d) return i + 1 - tail.length;
  }
  return -1;
}

/** True when an SSE chunk ends at an event boundary (a blank line), where a comment may be inserted. */
function endsEvent(chunk: Buffer): boolean {
  const n = chunk.length;
  return (n >= 2 && chunk[n - 1] === 0x0a && chunk[n - 2] === 0x0a) || (n >= 4 && chunk[n - 1] === 0x0a && chunk[n - 2] === 0x0d && chunk[n - 3] === 0x0a);
}
