/**
 * The agent sessions' open GET SSE streams, so the gateway can speak on them itself: the only
 * message it originates is `notifications/elicitation/complete` (MCP 2025-11-25
 * client/elicitation "Completion Notifications for URL Mode Elicitation"), sent when the user
 * finished connecting an upstream.
 *
 * A stream is either one forwarded from the upstream (the notification is injected between two
 * of its events) or one the gateway holds itself while the upstream cannot be reached without
 * the user's authorization (the notification is written and the stream ended, so the agent
 * reconnects and this time reaches the upstream).
 *
 * In process memory: a stream lives on the replica that serves its connection. With several
 * replicas the connect callback may run on another one; it would then publish the completion
 * through the store (pub/sub) for the replica holding the stream.
 */
import { protocolAtLeast } from './client-capabilities.ts';

/** The first protocol revision with URL elicitation and its completion notification. */
export const ELICITATION_COMPLETE_SINCE = '2025-11-25';

/** Where an SSE event for the agent can be written. */
export interface SseSink {
  /** Writes one complete SSE event (`…\n\n`); a forwarded stream delays it to the next event boundary. */
  deliver(event: string): void;
}

/** One open GET stream of an agent session. */
export interface OpenStream {
  /** The upstream's configured name. */
  upstream: string;
  /** The agent's `Mcp-Session-Id`. */
  mcpSessionId: string;
  /** Our session (`sid`) whose token opened the stream; undefined without login. */
  sessionId: string | undefined;
  /** The session's protocol version (`MCP-Protocol-Version`), if known. */
  protocolVersion: string | undefined;
  sink: SseSink;
}

/** What {@link StreamRegistry.notifyElicitationComplete} is told by the connect callback. */
export interface ElicitationCompleted {
  upstream: string;
  /** The agent session the flow was started from; nothing is sent without one. */
  mcpSessionId?: string;
  /** Our session (`sid`) that started the flow: only its own streams hear of it. */
  sessionId: string | undefined;
  elicitationId: string;
}

/** The registry of open streams. */
export interface StreamRegistry {
  /** Adds a stream; returns the function that removes it (call it when the stream ends). */
  register(stream: OpenStream): () => void;
  /**
   * Writes `notifications/elicitation/complete` on the session's open streams whose protocol
   * version has it (2025-11-25 and later). Returns how many streams it was written to.
   */
  notifyElicitationComplete(done: ElicitationCompleted): number;
  /** Open streams (for tests and metrics). */
  readonly size: number;
}

/** Builds an empty registry. */
export function createStreamRegistry(): StreamRegistry {
  const bySession = new Map<string, Set<OpenStream>>();
  const keyOf = (upstream: string, mcpSessionId: string) => `${upstream}\n${mcpSessionId}`;
  let size = 0;

  return {
    register(stream) {
      const key = keyOf(stream.upstream, stream.mcpSessionId);
      let set = bySession.get(key);
      if (!set) bySession.set(key, (set = new Set()));
      set.add(stream);
      size++;
      let removed = false;
      return () => {
        if (removed) return;
        removed = true;
        size--;
        set.delete(stream);
        if (set.size === 0 && bySession.get(key) === set) bySession.delete(key);
      };
    },
    notifyElicitationComplete({ upstream, mcpSessionId, sessionId, elicitationId }) {
      if (!mcpSessionId) return 0;
      const set = bySession.get(keyOf(upstream, mcpSessionId));
      if (!set) return 0;
      const event = elicitationCompleteEvent(elicitationId);
      let sent = 0;
      for (const stream of [...set]) {
        // The spec: send it only to the client that started the elicitation. Mcp-Session-Id is
        // chosen by the agent's side of the wire and can be replayed by another user; our `sid`
        // comes from a verified token.
        if (stream.sessionId !== sessionId) continue;
        if (!protocolAtLeast(stream.protocolVersion, ELICITATION_COMPLETE_SINCE)) continue;
        stream.sink.deliver(event);
        sent++;
      }
      return sent;
    },
    get size() {
      return size;
    },
  };
}

/** The SSE event carrying `notifications/elicitation/complete` for `elicitationId`. */
export function elicitationCompleteEvent(elicitationId: string): string {
  const message = { jsonrpc: '2.0', method: 'notifications/elicitation/complete', params: { elicitationId } };
  // JSON.stringify never emits a raw newline, so the data fits one `data:` line.
  return `event: message\ndata: ${JSON.stringify(message)}\n\n`;
}
