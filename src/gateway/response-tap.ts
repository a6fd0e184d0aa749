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
  let mode: 'json' | 'sse' | 'off' = 'off';
  let size = 0;
  let overflow = false;
  let chunks: Buffer[] = [];
  // Made for an SSE answer only: most answers are JSON, and a decoder allocates a buffer of its own.
  let decoder: StringDecoder | undefined;
  let pending = '';

  const { mentions } = options;
  const deliver = (text: string) => {
    if (mentions && !text.includes('\\u') && !mentions.some((needle) => text.includes(needle))) return;
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    for (const m of Array.isArray(message) ? message : [message]) {
      if (typeof m === 'object' && m !== null && !Array.isArray(m)) options.onMessage(m as Record<string, unknown>);
    }
  };

  /** One SSE event: its `data:` lines joined by newlines (WHATWG HTML §9.2.6). */
  const deliverEvent = (event: string) => {
    const data: string[] = [];
    for (const line of event.split(/\r\n|\r|\n/)) {
      if (line.startsWith('data:')) data.push(line.slice(line.charCodeAt(5) === 0x20 ? 6 : 5));
    }
    if (data.length > 0) deliver(data.join('\n'));
  };

  return {
    head(status, headers) {
      const type = String(headers['content-type'] ?? '').toLowerCase();
      if (status < 200 || status >= 300) mode = 'off';
      else if (type.startsWith('text/event-stream')) {
        mode = 'sse';
        decoder ??= new StringDecoder('utf8');
      }
      else if (type.startsWith('application/json')) mode = 'json';
    },
    data(chunk) {
      if (mode === 'json') {
        if (overflow) return;
        size += chunk.length;
        if (size > options.maxBytes) {
          overflow = true;
          chunks = [];
          return;
        }
        chunks.push(chunk);
        return;
      }
      if (mode !== 'sse') return;
      pending += decoder!.write(chunk);
      for (;;) {
        const boundary = EVENT_BOUNDARY.exec(pending);
        if (!boundary) break;
        const event = pending.slice(0, boundary.index);
        pending = pending.slice(boundary.index + boundary[0].length);
        if (overflow) overflow = false; // the end of the event that was too large: skipped
        else deliverEvent(event);
      }
      if (pending.length > options.maxBytes) {
        overflow = true;
        pending = '';
      }
    },
    end() {
      if (mode === 'json' && !overflow && chunks.length > 0) deliver((chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString('utf8'));
      else if (mode === 'sse' && !overflow && pending.trim() !== '') deliverEvent(pending);
      mode = 'off';
      chunks = [];
      pending = '';
    },
  };
}
