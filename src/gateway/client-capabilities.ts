/**
 * What each agent session can understand, remembered per `Mcp-Session-Id` so the gateway can pick
 * the best auth_required channel later in the session. A stateless upstream
 * issues no `Mcp-Session-Id`; the agent is then known by our session (`sid`, one token family:
 * one authorization of one client), which every request's verified token carries.
 *
 * Learned from two places: the `initialize` request (`params.capabilities.elicitation.url`,
 * MCP 2025-11-25 client/elicitation "Capabilities") and the `MCP-Protocol-Version` header every
 * later request carries (the negotiated version, MCP 2025-06-18+ transports §"Protocol Version Header").
 *
 * Kept in process memory, bounded (LRU) and with a TTL: losing an entry only degrades the channel
 * (a tool result instead of URL elicitation), never security. With several replicas and no session
 * affinity, a request can land on a replica that did not see `initialize`; such a deployment would
 * keep these records in the shared store through the storage port instead (the MCP spec's own
 * note on elicitation state and session affinity).
 */

/** What the gateway remembers about one agent session. */
export interface ClientSessionInfo {
  /** The client declared `capabilities.elicitation.url` at initialize (URL-mode elicitation, 2025-11-25). */
  elicitationUrl: boolean;
  /** The protocol version the session runs, from the `MCP-Protocol-Version` header; undefined until seen. */
  protocolVersion?: string;
}

/** Options of {@link createClientCapabilities}; validated when it is called. */
export interface ClientCapabilitiesOptions {
  /** Sessions remembered at most; the least recently used is forgotten first. Default 10000. */
  maxEntries?: number;
  /** How long an entry lives after its last use, in milliseconds. Default 24 hours. */
  ttlMs?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
}

/**
 * Which agent session a fact is about: the upstream's `Mcp-Session-Id` (sessions are issued per
 * upstream) and our `sid`; either may be absent. Lookups try the MCP session first.
 */
export interface AgentSessionKey {
  upstream: string;
  mcpSessionId?: string;
  /** Our session (`sid`) from the verified token; undefined without login. */
  sessionId?: string;
}

/** The per-session capability memory. */
export interface ClientCapabilities {
  /** Records what an `initialize` request declared, under the MCP session the upstream assigned and under our `sid`. */
  recordInitialize(info: AgentSessionKey & { capabilities: Record<string, unknown> | undefined }): void;
  /** Notes the session's protocol version from a later request's `MCP-Protocol-Version` header. No-op for unknown sessions. */
  noteProtocolVersion(info: AgentSessionKey & { protocolVersion: string }): void;
  /** What is known about a session, or undefined (never seen, expired, or evicted). */
  get(key: AgentSessionKey): ClientSessionInfo | undefined;
  /** Entries currently held (for tests and metrics). */
  readonly size: number;
}

interface Entry {
  info: ClientSessionInfo;
  expiresAt: number;
}

/** Protocol versions are dates (`YYYY-MM-DD`); anything else is not worth remembering. */
const VERSION = /^\d{4}-\d{2}-\d{2}$/;

/** Builds the bounded, expiring capability memory. */
export function createClientCapabilities(options: ClientCapabilitiesOptions = {}): ClientCapabilities {
  const maxEntries = options.maxEntries ?? 10_000;
  const ttlMs = options.ttlMs ?? 86_400_000;
  const now = options.now ?? Date.now;
  if (!Number.isSafeInteger(maxEntries) || maxEntries <= 0) throw new TypeError('maxEntries must be a positive integer');
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) throw new TypeError('ttlMs must be a positive integer');

  // A Map iterates in insertion order: deleting and re-inserting on use makes its first key the LRU.
  const entries = new Map<string, Entry>();
  /** The map keys a session is known by, most specific first. */
  const keysOf = (key: AgentSessionKey): string[] => [
    ...(key.mcpSessionId ? [`${key.upstream}\nm\n${key.mcpSessionId}`] : []),
    ...(key.sessionId ? [`${key.upstream}\ns\n${key.sessionId}`] : []),
  ];

  function put(key: string, info: ClientSessionInfo): void {
    entries.delete(key);
    entries.set(key, { info, expiresAt: now() + ttlMs });
    while (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
  }

  function live(key: string): Entry | undefined {
    const entry = entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= now()) {
      entries.delete(key);
      return undefined;
    }
    return entry;
  }

  return {
    recordInitialize(info) {
      for (const key of keysOf(info)) put(key, { elicitationUrl: declaresUrlElicitation(info.capabilities) });
    },
    noteProtocolVersion(info) {
      if (!VERSION.test(info.protocolVersion)) return;
      for (const key of keysOf(info)) {
        const entry = live(key);
        if (entry) put(key, { ...entry.info, protocolVersion: info.protocolVersion });
      }
    },
    get(sessionKey) {
      for (const key of keysOf(sessionKey)) {
        const entry = live(key);
        if (!entry) continue;
        put(key, entry.info);
        return { ...entry.info };
      }
      return undefined;
    },
    get size() {
      return entries.size;
    },
  };
}

/** `capabilities.elicitation.url` present as an object (2025-11-25); `elicitation: {}` alone means form mode only. */
export function declaresUrlElicitation(capabilities: Record<string, unknown> | undefined): boolean {
  const elicitation = capabilities?.elicitation;
  if (typeof elicitation !== 'object' || elicitation === null) return false;
  const url = (elicitation as Record<string, unknown>).url;
  return typeof url === 'object' && url !== null;
}

/** True when `version` (YYYY-MM-DD) is `minimum` or later; unknown versions are treated as older. */
export function protocolAtLeast(version: string | undefined, minimum: string): boolean {
  return version !== undefined && VERSION.test(version) && version >= minimum;
}
