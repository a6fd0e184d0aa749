/**
 * Step-up marks (the HTTP re-challenge): when the gateway answers an agent with
 * `403 insufficient_scope` naming a scope the session's grant lacks, it marks the session; while
 * the mark lives, the session's refreshes are refused, so the agent authorizes again for the
 * larger scope instead of refreshing into the same 403.
 *
 * Why: a refresh can never widen a grant (RFC 6749 §6), yet clients built on the TypeScript MCP
 * SDK up to 1.32 (and the tools built on it) answer a 403 step-up by refreshing first, then give
 * up on the identical 403 (modelcontextprotocol/typescript-sdk#2255). What SDK 1.32.2's `auth()`
 * does with a refused refresh decides the two answers:
 * - The first refused refresh is answered `invalid_grant` (RFC 6749 §5.2). The SDK then calls the
 *   provider's optional `invalidateCredentials('tokens')` and runs the flow once more: a provider
 *   that has the method has dropped its tokens and starts the new authorization.
 * - A provider without the method still holds the refresh token and presents it again at once.
 *   That second refusal is answered `interaction_required` (the user must act; OpenID Connect
 *   Core §3.1.2.6): the SDK knows no class for that code, treats it as a server error, and goes on
 *   to the new authorization in the same call. A second `invalid_grant` would escape `auth()`
 *   (it retries an `invalid_grant` once only), and a refresh answered with tokens leads the client
 *   into the same 403, where it gives up ("Server returned 403 after trying upscoping").
 * The second refusal ends the mark, as does its lifetime (`ttlMs` from the challenge, never
 * extended by a refusal): a client that then keeps the old session refreshes as before, and a
 * session is never refused for longer. Clients that re-authorize directly (SEP-2350) never
 * refresh, and never meet the mark.
 *
 * The refresh token itself is left untouched (not rotated, not revoked): the session ends only by
 * its usual rules.
 */
import type { Store } from '../../store/port.ts';

/** Options of {@link createStepUpMarks}. */
export interface StepUpMarksOptions {
  store: Store;
  /** How long a mark refuses refreshes, ms. Default 600000 (10 min, an authorization's life). */
  ttlMs?: number;
  /** Clock, ms since the epoch (tests). Default `Date.now`. */
  now?: () => number;
}

/**
 * What a refresh of a marked session gets: `first` (answer `invalid_grant`), `again` (the client
 * presented a refused token once more: answer `interaction_required`; the mark is spent).
 */
export type StepUpRefusal = 'first' | 'again';

/** See the module comment. */
export interface StepUpMarks {
  /** Marks session `sessionId` as challenged for `scopes` (a new challenge starts a new mark). */
  mark(sessionId: string, scopes: readonly string[]): Promise<void>;
  /** Whether a refresh of `sessionId` is refused, and how; undefined: not marked. */
  refuse(sessionId: string): Promise<StepUpRefusal | undefined>;
}

/** The stored mark: the challenge's scopes, when it ends (ms), and whether a refresh was refused yet. */
interface Mark {
  scopes: string[];
  until: number;
  refused: boolean;
}

/** Builds the marks over the storage port (key `stepup:{<sid>}`, in the session's hash slot). */
export function createStepUpMarks(options: StepUpMarksOptions): StepUpMarks {
  const ttlMs = options.ttlMs ?? 600_000;
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) throw new TypeError('ttlMs must be a positive integer');
  const now = options.now ?? Date.now;
  const { store } = options;
  const key = (sessionId: string) => `stepup:{${sessionId}}`;
  return {
    async mark(sessionId, scopes) {
      const mark: Mark = { scopes: [...scopes], until: now() + ttlMs, refused: false };
      await store.set(key(sessionId), JSON.stringify(mark), ttlMs);
    },
    async refuse(sessionId) {
      const stored = await store.get(key(sessionId));
      if (stored === undefined) return undefined;
      const mark = parseMark(stored, now() + ttlMs);
      const left = mark ? mark.until - now() : 0;
      if (!mark || left <= 0) {
        await store.deleteIfEquals(key(sessionId), stored);
        return undefined;
      }
      if (mark.refused) {
        // Spent by whichever concurrent refresh takes it; each of them is refused all the same.
        await store.deleteIfEquals(key(sessionId), stored);
        return 'again';
      }
      // Lost to a concurrent refresh or a new challenge: this refresh is refused as the first one.
      await store.compareAndSet(key(sessionId), stored, JSON.stringify({ ...mark, refused: true } satisfies Mark), left);
      return 'first';
    },
  };
}

/**
 * The stored mark, or undefined when it is not one. A bare array of scopes (what a replica of an
 * earlier version writes during a rolling upgrade) is a mark not yet refused, for `ttlMs` more.
 */
function parseMark(value: string, fresh: number): Mark | undefined {
  try {
    const parsed: unknown = JSON.parse(value);
    if (Array.isArray(parsed)) return { scopes: parsed.filter((s): s is string => typeof s === 'string'), until: fresh, refused: false };
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const { scopes, until, refused } = parsed as Partial<Mark>;
    if (!Array.isArray(scopes) || typeof until !== 'number' || typeof refused !== 'boolean') return undefined;
    return { scopes: scopes.filter((s): s is string => typeof s === 'string'), until, refused };
  } catch {
    return undefined;
  }
}
