import type { EventId, EventStore, StreamId } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';

/** Options of {@link createMemoryEventStore}. */
export interface MemoryEventStoreOptions {
  /** Events kept before the oldest are forgotten (a resume from a forgotten id is refused). Default 1000. */
  maxEvents?: number;
}

interface StoredEvent {
  streamId: StreamId;
  message: JSONRPCMessage;
}

/**
 * An in-memory SSE event log for one MCP session, so a client whose stream dropped can resume
 * with `Last-Event-ID` (MCP Streamable HTTP, "Resumability and Redelivery").
 *
 * Event ids are `<seq>`, unique within the session and increasing, so "events after X on the
 * same stream" is a scan from X's position. Priming events (empty messages the SDK stores to
 * hand the client a first id) are never replayed: they carry no message.
 */
export function createMemoryEventStore(options: MemoryEventStoreOptions = {}): EventStore {
  const maxEvents = options.maxEvents ?? 1000;
  const events = new Map<EventId, StoredEvent>(); // insertion order is event order
  let seq = 0;

  return {
    async storeEvent(streamId, message) {
      const id = String(++seq);
      events.set(id, { streamId, message });
      if (events.size > maxEvents) events.delete(events.keys().next().value!);
      return id;
    },

    async getStreamIdForEventId(eventId) {
      return events.get(eventId)?.streamId;
    },

    async replayEventsAfter(lastEventId, { send }) {
      const last = events.get(lastEventId);
      if (!last) throw new Error('unknown or expired event id');
      const after = Number(lastEventId);
      for (const [id, event] of events) {
        if (Number(id) <= after || event.streamId !== last.streamId) continue;
        if (Object.keys(event.message).length === 0) continue; // a priming event
        await send(id, event.message);
      }
      return last.streamId;
    },
  };
}
