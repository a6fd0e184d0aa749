/**
 * Reading JSON-RPC messages out of a response while it streams to the agent, without holding
 * it: the tap gets a copy of each chunk as it is written (forward.ts `observe`), keeps at most
 * `maxBytes` of one message, and hands every complete message to `onMessage` — at the end of an
 * `application/json` body, or at each event boundary of a `text/event-stream` (so an SSE stream
 * is never waited for). Used for the audit: the tool names of `tools/list` answers (the metric's
 * label set) and whether a `tools/call` answer is an error.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { StringDecoder } from 'node:string_decoder';

/** Sees a streamed response as it passes: its head, each chunk, its end (before the agent's response ends). */
export interface ResponseObserver {
  head(status: number, headers: IncomingHttpHeaders): void;
  data(chunk: Buffer): void;
  end(): void;
}

/** Options of {@link createRpcResponseTap}. */
export interface RpcResponseTapOptions {
  /** Most bytes of one message kept; a larger message is skipped (never parsed, never an error). */
  maxBytes: number;
  /** Called with each JSON-RPC message of a 2xx answer (each member of a batch). */
  onMessage(message: Record<string, unknown>): void;
  /**
   * When given, a message is parsed only if its text contains one of these strings (or a `\u`
   * escape, which could spell one): `onMessage` only wants messages with these keys, and most
   * answers have none, so the parse is skipped. A message without them is never delivered.
   */
  mentions?: readonly string[];
}

const EVENT_BOUNDARY = /\r?\n\r?\n|\r\r/;

/** Creates a tap; see the module comment. Anything unparsable is ignored: the tap must never fail a response. */
export function createRpcResponseTap(options: RpcResponseTapOptions): ResponseObserver {
  return new RpcResponseTap(options.maxBytes, options.onMessage, options.mentions);
}

/**
 * The tap's state, one object per answer (a class: its methods are shared, where a closure per
 * method cost an allocation each on every tapped answer).
 */
export class RpcResponseTap implements ResponseObserver {
  #mode: 'json' | 'sse' | 'off' = 'off';
  #size = 0;
  #overflow = false;
  #chunks: Buffer[] = [];
  // Made for an SSE answer only: most answers are JSON, and a decoder allocates a buffer of its own.
  #decoder: StringDecoder | undefined;
  #pending = '';
  readonly #maxBytes: number;
  readonly #onMessage: (message: Record<string, unknown>) => void;
  readonly #mentions: readonly string[] | undefined;

  constructor(maxBytes: number, onMessage: (message: Record<string, unknown>) => void, mentions?: readonly string[]) {
    this.#maxBytes = maxBytes;
    this.#onMessage = onMessage;
    this.#mentions = mentions;
  }

  head(status: number, headers: IncomingHttpHeaders): void {
    const type = String(headers['content-type'] ?? '').toLowerCase();
    if (status < 200 || status >= 300) this.#mode = 'off';
    else if (type.startsWith('text/event-stream')) {
      this.#mode = 'sse';
      this.#decoder ??= new StringDecoder('utf8');
    } else if (type.startsWith('application/json')) this.#mode = 'json';
  }

  data(chunk: Buffer): void {
    if (this.#mode === 'json') {
      if (this.#overflow) return;
      this.#size += chunk.length;
      if (this.#size > this.#maxBytes) {
        this.#overflow = true;
        this.#chunks = [];
        return;
      }
      this.#chunks.push(chunk);
      return;
    }
    if (this.#mode !== 'sse') return;
    let pending = this.#pending + this.#decoder!.write(chunk);
    for (;;) {
      const boundary = EVENT_BOUNDARY.exec(pending);
      if (!boundary) break;
      const event = pending.slice(0, boundary.index);
      pending = pending.slice(boundary.index + boundary[0].length);
      if (this.#overflow) this.#overflow = false; // the end of the event that was too large: skipped
      else this.#deliverEvent(event);
    }
    if (pending.length > this.#maxBytes) {
      this.#overflow = true;
      pending = '';
    }
    this.#pending = pending;
  }

  end(): void {
    const chunks = this.#chunks;
    if (this.#mode === 'json' && !this.#overflow && chunks.length > 0) this.#deliver((chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString('utf8'));
    else if (this.#mode === 'sse' && !this.#overflow && this.#pending.trim() !== '') this.#deliverEvent(this.#pending);
    this.#mode = 'off';
    this.#chunks = [];
    this.#pending = '';
  }

  #deliver(text: string): void {
    const mentions = this.#mentions;
    if (mentions && !text.includes('\\u') && !mentions.some((needle) => text.includes(needle))) return;
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    for (const m of Array.isArray(message) ? message : [message]) {
      if (typeof m === 'object' && m !== null && !Array.isArray(m)) this.#onMessage(m as Record<string, unknown>);
    }
  }

  /** One SSE event: its `data:` lines joined by newlines (WHATWG HTML §9.2.6). */
  #deliverEvent(event: string): void {
    const data: string[] = [];
    for (const line of event.split(/\r\n|\r|\n/)) {
      if (line.startsWith('data:')) data.push(line.slice(line.charCodeAt(5) === 0x20 ? 6 : 5));
    }
    if (data.length > 0) this.#deliver(data.join('\n'));
  }
}
