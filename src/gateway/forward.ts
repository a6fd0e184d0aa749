import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { UpstreamRejection } from '../credentials/types.ts';
import { agentResponseHeaders, isEventStream, relocate, type UpstreamPlace } from './headers.ts';
import type { ResponseObserver } from './response-tap.ts';
import { endsEvent, eventEnd } from './sse-boundary.ts';

/** One request to send upstream and where its answer goes. */
export interface ForwardRequest {
  dispatcher: Dispatcher;
  origin: string;
  path: string;
  method: string;
  headers: Record<string, string | string[]>;
  body: Buffer | undefined;
  /** The agent's response. When it closes before it finished (the agent left), the upstream request is aborted. */
  res: ServerResponse;
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
  return new Promise<ForwardOutcome>((resolve, reject) => {
    const f: Forwarding = {
      request,
      res: request.res,
      resolve,
      reject,
      mode: 'waiting',
      deferred: undefined,
      status: 0,
      held: undefined,
      stream: false,
      bytes: 0,
      atBoundary: true,
      tail: NO_BYTES,
      lastWrite: Date.now(),
      keepAlive: undefined,
      heldTimer: undefined,
      settled: false,
      ending: false,
      pending: undefined,
      controller: undefined,
      onAgentClose: undefined,
      onEndStream: undefined,
      onRequestStart,
      onResponseStart,
      onResponseData,
      onResponseEnd,
      onResponseError,
      inject,
    };
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
      f,
    );
  });
}

/**
 * One forwarded request in flight: where its answer stands and how its promise settles. It is
 * its own undici dispatch handler and the SSE injector it hands out: those methods are the
 * module's functions below (undici and the injector's users call them as methods, so `this` is
 * this object), and a request allocates this one object where it used to allocate a closure per
 * step. The two signal listeners stay closures: Node's EventTarget wraps a listener object in a
 * closure of its own (and calls it through an async function), which would cost more.
 */
interface Forwarding extends Dispatcher.DispatchHandler, SseInjector {
  request: ForwardRequest;
  res: ServerResponse;
  resolve(outcome: ForwardOutcome): void;
  reject(error: Error): void;
  mode: 'waiting' | 'held' | 'deferred' | 'streaming';
  // What the upstream sent while `beforeResponse` was pending (undici may deliver a chunk parsed before the pause).
  deferred: { chunks: Buffer[]; ended: boolean } | undefined;
  status: number;
  held: { headers: IncomingHttpHeaders; chunks: Buffer[]; size: number } | undefined;
  stream: boolean;
  bytes: number;
  atBoundary: boolean;
  /** The last bytes written of an SSE stream: an event's closing blank line may straddle chunks. */
  tail: Buffer;
  lastWrite: number;
  keepAlive: NodeJS.Timeout | undefined;
  heldTimer: NodeJS.Timeout | undefined;
  settled: boolean;
  /** Asked to end (shutdown): the stream ends at the next event boundary. */
  ending: boolean;
  // Our own events wait here while the upstream is in the middle of one of its events.
  pending: string[] | undefined;
  controller: Dispatcher.DispatchController | undefined;
  /** Listens for the agent's response to close: the upstream request goes with the agent. */
  onAgentClose: (() => void) | undefined;
  /** Listens to `endStream`, for an SSE response only. */
  onEndStream: (() => void) | undefined;
}

const NO_BYTES = Buffer.alloc(0);
const ONCE = { once: true };

/** Dispatch handler, the request is on its way: abort it if the agent has already left, else when it leaves. */
function onRequestStart(this: Forwarding, c: Dispatcher.DispatchController): void {
  this.controller = c;
  if (agentLeft(this.res)) c.abort(new Error('agent closed the connection'));
  else this.res.once('close', (this.onAgentClose = abortUpstream.bind(undefined, this)));
}

/** Dispatch handler, on the upstream's headers: refuse a foreign redirect, hold a rejection, or start the agent's response (after `beforeResponse`). */
function onResponseStart(this: Forwarding, c: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
  const { request } = this;
  this.status = statusCode;
  if (statusCode >= 300 && statusCode < 400 && typeof headers.location === 'string' && relocate(headers.location, request.place) === undefined) {
    // A redirect elsewhere would send the agent, and the token many clients repeat on
    // redirects, to a host we do not vouch for, or around us: refused as a 502 instead.
    finish(this, new UpstreamError('redirect', new Error(`upstream answered ${statusCode} with a Location outside its own path`)));
    c.abort(new Error('upstream redirected elsewhere'));
    return;
  }
  if (request.hold(statusCode, headers)) return holdForRejection(this, headers);
  const before = request.beforeResponse?.(statusCode, headers);
  if (!before) return startResponse(this, statusCode, headers);
  deferUntil(this, c, before, headers);
}

/** Dispatch handler, on each chunk of the body: queued, held or streamed as the response's mode says. */
function onResponseData(this: Forwarding, c: Dispatcher.DispatchController, chunk: Buffer): void {
  if (this.mode === 'deferred') {
    this.deferred?.chunks.push(chunk);
    return;
  }
  if (this.mode === 'held') return collectHeld(this, chunk);
  if (this.settled) return;
  if (this.ending && this.stream && endAtEventEnd(this, chunk)) return;
  streamChunk(this, c, chunk);
}

/** Dispatch handler, on the body's end: the agent's response ends (a held one settles with what arrived). */
function onResponseEnd(this: Forwarding): void {
  if (this.settled) return;
  if (this.mode === 'deferred') {
    this.deferred!.ended = true;
    return;
  }
  if (this.mode === 'held') return finishHeld(this, false);
  this.request.observe?.end();
  if (this.atBoundary) flushPending(this);
  this.res.end();
  finish(this, { kind: 'sent', status: this.status, stream: this.stream, bytes: this.bytes, cut: false });
}

/** Dispatch handler, on a failure: before the agent's response started an UpstreamError, after it a cut. */
function onResponseError(this: Forwarding, _c: Dispatcher.DispatchController | null, error: Error): void {
  if (this.settled) return;
  const { request, res } = this;
  if (this.mode !== 'streaming') {
    const kind = agentLeft(res) ? 'aborted' : TIMEOUT_CODES.has((error as { code?: string }).code ?? '') ? 'timeout' : 'unreachable';
    finish(this, new UpstreamError(kind, error));
    return;
  }
  // Headers were sent: the agent already has a status. End an SSE stream cleanly at the
  // transport level (it will reconnect with Last-Event-ID); cut anything else so a
  // truncated JSON body is never mistaken for a complete one.
  const cut = !agentLeft(res);
  if (cut) request.onCut?.();
  if (!res.writableEnded && !res.destroyed) {
    if (this.stream) res.end();
    else res.destroy();
  }
  finish(this, { kind: 'sent', status: this.status, stream: this.stream, bytes: this.bytes, cut });
}

/** The agent's response closed: if it had not finished, the agent left, and the upstream request goes with it. */
function abortUpstream(f: Forwarding): void {
  if (agentLeft(f.res)) f.controller?.abort(new Error('agent closed the connection'));
}

/** The agent's response was closed before it finished: the agent went away (or the response was cut). */
function agentLeft(res: ServerResponse): boolean {
  return res.destroyed && !res.writableFinished;
}

/** Shutdown: the stream ends at the next event boundary (now, when it is at one). */
function endStream(f: Forwarding): void {
  f.ending = true;
  if (f.atBoundary) endAtBoundary(f);
}

/** SseInjector: our event goes out at the next event boundary of the upstream's stream. */
function inject(this: Forwarding, event: string): void {
  const { res } = this;
  if (this.settled || res.writableEnded || res.destroyed) return;
  (this.pending ??= []).push(event);
  if (this.atBoundary) flushPending(this);
}

/** Writes our own events that waited for an event boundary. */
function flushPending(f: Forwarding): void {
  const { pending, res } = f;
  if (!pending) return;
  while (pending.length > 0 && !res.writableEnded && !res.destroyed) {
    res.write(pending.shift()!);
    f.lastWrite = Date.now();
  }
}

/** Settles the promise once: timers stopped, listeners removed, the open-stream gauge down. */
function finish(f: Forwarding, outcome: ForwardOutcome | Error): void {
  if (f.settled) return;
  f.settled = true;
  if (f.keepAlive) clearInterval(f.keepAlive);
  if (f.heldTimer) clearTimeout(f.heldTimer);
  if (f.onAgentClose) f.res.removeListener('close', f.onAgentClose);
  if (f.onEndStream) f.request.endStream?.removeEventListener('abort', f.onEndStream);
  if (f.stream) f.request.onStream?.(false);
  if (outcome instanceof Error) f.reject(outcome);
  else f.resolve(outcome);
}

/** A 401 or step-up 403 for the credential source: nothing reaches the agent; its body is collected, bounded. */
function holdForRejection(f: Forwarding, headers: IncomingHttpHeaders): void {
  f.mode = 'held';
  f.held = { headers, chunks: [], size: 0 };
  f.heldTimer = setTimeout(finishHeld, f.request.heldBodyTimeoutMs ?? HELD_BODY_TIMEOUT_MS, f, true);
  f.heldTimer.unref();
}

/** One chunk of a held body, up to its bound. */
function collectHeld(f: Forwarding, chunk: Buffer): void {
  if (f.settled) return;
  const held = f.held!;
  held.chunks.push(chunk);
  held.size += chunk.length;
  if (held.size >= HELD_BODY_LIMIT) finishHeld(f, true);
}

/**
 * Settles a held response with what arrived. An upstream that sends a 401's headers and then
 * trickles or never ends its body must not hold the agent's request (and a replay) for ever,
 * nor make us read without end: past the time or size bound the upstream request is cut.
 */
function finishHeld(f: Forwarding, cut: boolean): void {
  finish(f, { kind: 'held', rejection: { status: f.status, headers: f.held!.headers, body: Buffer.concat(f.held!.chunks).subarray(0, HELD_BODY_LIMIT) } });
  if (cut) f.controller?.abort(new Error('held upstream body cut at its bound'));
}

/** `beforeResponse` returned a promise: the upstream is paused and what it still sends waits until it settles. */
function deferUntil(f: Forwarding, c: Dispatcher.DispatchController, before: Promise<void>, headers: IncomingHttpHeaders): void {
  f.mode = 'deferred';
  f.deferred = { chunks: [], ended: false };
  c.pause();
  before.then(
    () => {
      if (f.settled) return;
      const queued = f.deferred!;
      f.deferred = undefined;
      startResponse(f, f.status, headers);
      for (const chunk of queued.chunks) f.onResponseData!(c, chunk);
      if (queued.ended) f.onResponseEnd!(c, {});
      else if (!f.res.writableNeedDrain) c.resume();
    },
    (error: unknown) => {
      finish(f, error instanceof Error ? error : new Error(String(error)));
      c.abort(error instanceof Error ? error : new Error(String(error)));
    },
  );
}

/** The response goes to the agent from here on: status and headers first. */
function startResponse(f: Forwarding, statusCode: number, headers: IncomingHttpHeaders): void {
  const { request, res } = f;
  f.mode = 'streaming';
  f.stream = isEventStream(headers);
  request.observe?.head(statusCode, headers);
  res.writeHead(statusCode, agentResponseHeaders(headers, request.place));
  if (!f.stream) return;
  // Send headers now: an idle GET stream must reach the agent before its first event.
  res.flushHeaders();
  request.onStream?.(true);
  if (request.sseKeepAliveMs) startKeepAlive(f, request.sseKeepAliveMs);
  request.onSse?.(f);
  if (request.endStream?.aborted) endStream(f);
  else request.endStream?.addEventListener('abort', (f.onEndStream = endStream.bind(undefined, f)), ONCE);
}

function startKeepAlive(f: Forwarding, intervalMs: number): void {
  f.keepAlive = setInterval(keepAlive, Math.max(250, Math.floor(intervalMs / 2)), f, intervalMs);
  f.keepAlive.unref();
}

/** An SSE comment after `intervalMs` without data, at an event boundary only. */
function keepAlive(f: Forwarding, intervalMs: number): void {
  if (f.atBoundary && Date.now() - f.lastWrite >= intervalMs && !f.res.writableEnded) {
    f.res.write(': keep-alive\n\n');
    f.lastWrite = Date.now();
  }
}

/** One chunk to the agent, as it came: the event boundary tracked, the upstream paused while the agent's socket is full. */
function streamChunk(f: Forwarding, c: Dispatcher.DispatchController, chunk: Buffer): void {
  const { request, res } = f;
  f.bytes += chunk.length;
  f.lastWrite = Date.now();
  if (f.stream) {
    // An event's closing blank line may be split across chunks: judge the last bytes of the stream.
    f.tail = Buffer.concat([f.tail, chunk.subarray(-4)]).subarray(-4);
    f.atBoundary = endsEvent(f.tail);
  }
  request.observe?.data(chunk);
  const flowing = res.write(chunk);
  if (f.atBoundary && f.pending !== undefined && f.pending.length > 0) flushPending(f);
  if (!flowing) {
    c.pause();
    res.once('drain', () => c.resume());
  }
}

/**
 * Shutting down, an SSE stream: only the rest of the event under way goes out; what follows it is
 * left to the resumed stream. False when `chunk` holds no event end (it is streamed as usual).
 */
function endAtEventEnd(f: Forwarding, chunk: Buffer): boolean {
  const end = eventEnd(f.tail, chunk);
  if (end < 0) return false;
  f.request.observe?.data(chunk.subarray(0, end));
  f.res.write(chunk.subarray(0, end));
  f.bytes += end;
  f.atBoundary = true;
  endAtBoundary(f);
  return true;
}

/** Ends the agent's stream after a whole event, then lets go of the upstream. */
function endAtBoundary(f: Forwarding): void {
  if (f.settled) return;
  flushPending(f);
  const { res } = f;
  if (!res.writableEnded && !res.destroyed) res.end();
  finish(f, { kind: 'sent', status: f.status, stream: f.stream, bytes: f.bytes, cut: false });
  f.controller?.abort(new Error('the gateway is shutting down'));
}
