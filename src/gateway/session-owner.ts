/**
 * Which user each MCP session belongs to (MCP security best practices, "Session Hijacking": bind
 * session ids to user-specific information). An upstream in mode `none` or `static` gets one
 * shared credential for everybody, so without this a user presenting another user's
 * `Mcp-Session-Id` would ride that session: its state, its results, its SSE stream.
 *
 * The owner is recorded when the upstream answers an `initialize` with a new `Mcp-Session-Id`,
 * before that answer reaches the agent (so its next request finds the record), and every later
 * request carrying the id must come from the same user; anyone else gets the 404 of an unknown
 * session, which tells nothing about whose it is. The owner is the user (our token's `sub`), not
 * our session (`sid`): an agent that re-authorizes (step-up) gets a new `sid` and keeps its MCP session.
 *
 * Kept in the store (any replica may issue a session and any may serve it), under a key derived
 * from a hash of the upstream and the session id (a dump of the store lists no usable session id),
 * sealed with the key name as additional data, with a sliding TTL. A session id without a record
 * (never recorded, expired, or from before this rule) is refused as unknown: the agent starts a
 * new session, which the MCP transport requires clients to do on a 404.
 *
 * Without login (no `idp:`) there is no user to bind to: every caller is anonymous and shares the
 * upstream's credential anyway, so nothing is recorded or checked (docs/threat-model.md).
 */
import { hash } from 'node:crypto';
import { HttpError } from '../http/errors.ts';
import type { Store } from '../store/port.ts';
import type { Sealer } from '../store/sealed.ts';

/** Options of {@link createSessionOwners}. */
export interface SessionOwnersOptions {
  store: Store;
  sealer: Sealer;
  /** How long a session is remembered after its last use, ms. Default 24 hours. */
  idleTtlMs?: number;
  /** Clock, epoch ms; default `Date.now`. */
  now?: () => number;
}

/** Which MCP session: sessions are issued per upstream. */
export interface McpSessionRef {
  upstream: string;
  mcpSessionId: string;
}

/** The binding of MCP sessions to users. */
export interface SessionOwners {
  /** Records `owner` as the user the upstream issued this session to. */
  record(ref: McpSessionRef & { owner: string }, signal?: AbortSignal): Promise<void>;
  /**
   * Resolves when `user` owns the session (sliding its lifetime); throws {@link SessionNotFound}
   * when someone else does or nobody is recorded. Throws `StoreUnavailableError` on an outage.
   */
  check(ref: McpSessionRef & { user: string }, signal?: AbortSignal): Promise<void>;
  /** Forgets the session (after the agent ended it with DELETE). */
  forget(ref: McpSessionRef, signal?: AbortSignal): Promise<void>;
}

/** The answer to a session id the caller may not use: as for any unknown session (404, JSON-RPC error). */
export class SessionNotFound extends HttpError {
  override name = 'SessionNotFound';
  constructor() {
    // -32001: what the MCP SDK servers answer for an unknown session.
    super(404, 'session_not_found', { description: 'Session not found', rpcCode: -32001 });
  }
}

interface OwnerRecord {
  /** The user (`sub`) the session was issued to. */
  sub: string;
  /** When the record expires, epoch ms (to slide it only when half its lifetime is gone). */
  exp: number;
}

/** Creates the store-backed binding. */
export function createSessionOwners(options: SessionOwnersOptions): SessionOwners {
  const { store, sealer } = options;
  const idleTtlMs = options.idleTtlMs ?? 86_400_000;
  const now = options.now ?? Date.now;
  if (!Number.isSafeInteger(idleTtlMs) || idleTtlMs <= 0) throw new TypeError('idleTtlMs must be a positive integer');

  const keyOf = (ref: McpSessionRef) => `mcpowner:${hash('sha256', `${ref.upstream}\n${ref.mcpSessionId}`, 'base64url')}`;

  async function write(key: string, sub: string, signal?: AbortSignal): Promise<void> {
    const record: OwnerRecord = { sub, exp: now() + idleTtlMs };
    await store.set(key, sealer.seal(key, JSON.stringify(record)), idleTtlMs, signal);
  }

  return {
    record: (ref, signal) => write(keyOf(ref), ref.owner, signal),
    async check(ref, signal) {
      const key = keyOf(ref);
      const text = await store.get(key, signal);
      let record: OwnerRecord | undefined;
      try {
        record = text === undefined ? undefined : (JSON.parse(sealer.open(key, text)) as OwnerRecord);
      } catch {
        // A value that does not open under its own key name was not written by us for this session.
        record = undefined;
      }
      if (!record || record.sub !== ref.user) throw new SessionNotFound();
      // Sliding, with one write per half lifetime rather than one per request.
      if (record.exp - now() < idleTtlMs / 2) await write(key, record.sub, signal);
    },
    forget: (ref, signal) => store.delete(keyOf(ref), signal),
  };
}
