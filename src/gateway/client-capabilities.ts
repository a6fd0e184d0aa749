/**
 * What each agent session can understand, remembered per `Mcp-Session-Id` so the gateway can pick
 * the best auth_required channel later in the session. A stateless upstream issues no
 * `Mcp-Session-Id`; the agent is then known by our session (`sid`, one token family: one
 * authorization of one client), which every request's verified token carries.
 *
 * Learned from two places: the `initialize` request (`params.capabilities.elicitation.url`,
 * MCP 2025-11-25 client/elicitation "Capabilities") and the `MCP-Protocol-Version` header every
 * later request carries (the negotiated version, MCP 2025-06-18+ transports §"Protocol Version Header").
 *
 * Kept in the store, so every replica sees what the agent declared on any of them (with several
 * replicas and no session affinity, `initialize` and the request that needs the channel often
 * land on different replicas). Keys carry a SHA-256 digest of the session id, never the id itself
 * (an MCP session id is a bearer of the session at the upstream). Records are not sealed: a
 * capability flag and a protocol version are not secret.
 *
 * Lifetime: `ttlMs` (default 24 hours) after the last use, sliding. A request that carries the
 * session refreshes it at most once per `touchIntervalMs` (default 1 hour) per replica, so a busy
 * session costs no store write per request while an idle one is forgotten a day later.
 *
 * The only per-process state is a bounded cache of what this replica last wrote or read, used to
 * skip those refreshes; {@link ClientCapabilities.get} (the channel decision) always reads the store.
 * Every method rejects with `StoreUnavailableError` when the store fails: the caller answers 503
 * rather than guess a channel.
 */
import { hash } from 'node:crypto';
import type { Store } from '../store/port.ts';

/** What the gateway remembers about one agent session. */
export interface ClientSessionInfo {
  /** The client declared `capabilities.elicitation.url` at initialize (URL-mode elicitation, 2025-11-25). */
  elicitationUrl: boolean;
  /** The protocol version the session runs, from the `MCP-Protocol-Version` header; undefined until seen. */
  protocolVersion?: string;
}

/** Options of {@link createClientCapabilities}; validated when it is called. */
export interface ClientCapabilitiesOptions {
  /** Where the records live (shared by every replica). */
  store: Store;
  /** How long a record lives after its last use, in milliseconds. Default 86 400 000 (24 hours). */
  ttlMs?: number;
  /**
   * How often one replica refreshes the TTL of a session it keeps seeing, in milliseconds.
   * Default 3 600 000 (1 hour); must be shorter than `ttlMs`.
   */
  touchIntervalMs?: number;
  /** Sessions whose last write this replica remembers (to skip refreshes); least recently used forgotten first. Default 10 000. */
  maxCached?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
}

/**
 * Which agent session a fact is about: the upstream's `Mcp-Session-Id` (sessions are issued per
 * upstream) and our `sid`; either may be absent. Lookups try the MCP session first.
 */
export interface AgentSessionKey {
  upstream: string;
  mcpSessionId?: string | undefined;
  /** Our session (`sid`) from the verified token; undefined without login. */
  sessionId?: string | undefined;
}

/** The per-session capability records. */
export interface ClientCapabilities {
  /** Records what an `initialize` request declared, under the MCP session the upstream assigned and under our `sid`. */
  recordInitialize(info: AgentSessionKey & { capabilities: Record<string, unknown> | undefined }, signal?: AbortSignal): Promise<void>;
  /**
   * Notes the session's protocol version from a request's `MCP-Protocol-Version` header and slides
   * the record's lifetime. No-op for unknown sessions (a header creates nothing).
   */
  noteProtocolVersion(info: AgentSessionKey & { protocolVersion: string }, signal?: AbortSignal): Promise<void> | undefined;
  /** What the store knows about a session, or undefined (never seen, or expired). */
  get(key: AgentSessionKey, signal?: AbortSignal): Promise<ClientSessionInfo | undefined>;
}

/** Protocol versions are dates (`YYYY-MM-DD`); anything else is not worth remembering. */
const VERSION = /^\d{4}-\d{2}-\d{2}$/;

interface Cached {
  /** The store key (a digest of the id): computed once per session, not per request. */
  key: string;
  /** The record as last written or read by this replica. */
  raw: string;
  /** Its protocol version, parsed once. */
  protocolVersion: string | undefined;
  /** When this replica last wrote it (its TTL was reset then). */
  writtenAt: number;
}

/** Builds the store-backed capability records. */
export function createClientCapabilities(options: ClientCapabilitiesOptions): ClientCapabilities {
  const { store } = options;
  const ttlMs = options.ttlMs ?? 86_400_000;
  const touchIntervalMs = options.touchIntervalMs ?? Math.min(3_600_000, Math.floor(ttlMs / 2));
  const maxCached = options.maxCached ?? 10_000;
  const now = options.now ?? Date.now;
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) throw new TypeError('ttlMs must be a positive integer');
  if (!Number.isSafeInteger(touchIntervalMs) || touchIntervalMs <= 0 || touchIntervalMs >= ttlMs) {
    throw new TypeError('touchIntervalMs must be a positive integer below ttlMs');
  }
  if (!Number.isSafeInteger(maxCached) || maxCached <= 0) throw new TypeError('maxCached must be a positive integer');

  /**
   * What this replica last wrote or read, by session as the request names it (the upstream, the
   * kind and the id: {@link memoKey}), so a request of a session noted within the touch interval
   * costs a map lookup: no digest, no parse, no promise. Holds ids in this process's memory only,
   * like the requests that carry them; the store never sees them. Oldest write forgotten first.
   */
  const cache = new Map<string, Cached>();
  function remember(memo: string, key: string, raw: string, writtenAt: number): void {
    cache.delete(memo);
    cache.set(memo, { key, raw, protocolVersion: parse(raw)?.protocolVersion, writtenAt });
    while (cache.size > maxCached) cache.delete(cache.keys().next().value!);
  }

  /** Writes `next` over `expected` (compare-and-set, so a concurrent re-initialize on another replica is not overwritten); true when written. */
  async function swap(memo: string, key: string, expected: string, next: string, signal: AbortSignal | undefined): Promise<boolean> {
    const at = now();
    if (!(await store.compareAndSet(key, expected, next, ttlMs, signal))) return false;
    remember(memo, key, next, at);
    return true;
  }

  /** True when this replica wrote the record with this version within the touch interval: nothing to do. */
  function fresh(memo: string, protocolVersion: string): boolean {
    const cached = cache.get(memo);
    return cached !== undefined && cached.protocolVersion === protocolVersion && now() - cached.writtenAt < touchIntervalMs;
  }

  /** Sets the version on one record and slides its TTL; a lost race re-reads the store and tries again (three tries). */
  async function note(ref: SessionRef, protocolVersion: string, signal: AbortSignal | undefined): Promise<void> {
    const { memo } = ref;
    const cached = cache.get(memo);
    const key = cached?.key ?? storeKey(ref);
    // The cached copy first (it saves a read); after a lost race, or without one, the store's.
    let raw = cached?.raw;
    for (let attempt = 0; attempt < 3; attempt++) {
      raw ??= await store.get(key, signal);
      if (raw === undefined) break;
      const info = parse(raw);
      if (!info) return;
      if (await swap(memo, key, raw, serialize({ ...info, protocolVersion }), signal)) return;
      raw = undefined;
    }
    cache.delete(memo);
  }

  return {
    async recordInitialize(info, signal) {
      const raw = serialize({ elicitationUrl: declaresUrlElicitation(info.capabilities) });
      const at = now();
      await Promise.all(
        refsOf(info).map(async (ref) => {
          const key = storeKey(ref);
          await store.set(key, raw, ttlMs, signal);
          remember(ref.memo, key, raw, at);
        }),
      );
    },
    noteProtocolVersion(info, signal) {
      const { protocolVersion } = info;
      if (!VERSION.test(protocolVersion)) return undefined;
      let notes: Promise<void>[] | undefined;
      // refsOf, inline: a request of a session already noted allocates nothing here.
      for (const kind of KINDS) {
        const id = kind === 'm' ? info.mcpSessionId : info.sessionId;
        if (!id) continue;
        const memo = memoKey(info.upstream, kind, id);
        if (!fresh(memo, protocolVersion)) (notes ??= []).push(note({ memo, upstream: info.upstream, kind, id }, protocolVersion, signal));
      }
      if (notes === undefined) return undefined;
      return notes.length === 1 ? notes[0] : Promise.all(notes).then(() => undefined);
    },
    async get(sessionKey, signal) {
      for (const ref of refsOf(sessionKey)) {
        const raw = await store.get(storeKey(ref), signal);
        if (raw === undefined) continue;
        const info = parse(raw);
        if (info) return info;
      }
      return undefined;
    },
  };
}

/** One session as this module names it: in this process's cache (`memo`) and, through {@link storeKey}, in the store. */
interface SessionRef {
  memo: string;
  upstream: string;
  /** `m`: an MCP session (`Mcp-Session-Id`); `s`: ours (`sid`). */
  kind: 'm' | 's';
  id: string;
}

/** Lookups try the MCP session first. */
const KINDS = ['m', 's'] as const;

/** The sessions a key names, most specific first. */
function refsOf(key: AgentSessionKey): SessionRef[] {
  const refs: SessionRef[] = [];
  for (const kind of KINDS) {
    const id = kind === 'm' ? key.mcpSessionId : key.sessionId;
    if (id) refs.push({ memo: memoKey(key.upstream, kind, id), upstream: key.upstream, kind, id });
  }
  return refs;
}

/** This process's cache key of a session: upstream, kind and the id itself. */
function memoKey(upstream: string, kind: 'm' | 's', id: string): string {
  return `${upstream}\n${kind}\n${id}`;
}

/** The store key of a session: a digest, never the id (an MCP session id is a bearer of the session at the upstream). */
function storeKey(ref: SessionRef): string {
  return `mcpclient:${ref.upstream}:${ref.kind}:${hash('sha256', ref.id, 'base64url')}`;
}

function serialize(info: ClientSessionInfo): string {
  return JSON.stringify(info.protocolVersion === undefined ? { elicitationUrl: info.elicitationUrl } : info);
}

/** A record as stored; anything malformed counts as absent (it is only ever written by us). */
function parse(raw: string): ClientSessionInfo | undefined {
  try {
    const value = JSON.parse(raw) as { elicitationUrl?: unknown; protocolVersion?: unknown };
    if (typeof value.elicitationUrl !== 'boolean') return undefined;
    const protocolVersion = typeof value.protocolVersion === 'string' && VERSION.test(value.protocolVersion) ? value.protocolVersion : undefined;
    return protocolVersion === undefined ? { elicitationUrl: value.elicitationUrl } : { elicitationUrl: value.elicitationUrl, protocolVersion };
  } catch {
    return undefined;
  }
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
