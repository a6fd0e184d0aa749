/**
 * Step-up marks (the HTTP re-challenge): when the gateway answers an agent with
 * `403 insufficient_scope` naming a scope the session's grant lacks, it marks the session; the
 * session's next refresh is then refused with `invalid_grant`, so the agent authorizes again for
 * the larger scope instead of refreshing into the same 403.
 *
 * Why: a refresh can never widen a grant (RFC 6749 §6), yet clients built on the TypeScript MCP
 * SDK up to 1.32 (and the tools built on it) answer a 403 step-up by refreshing first, then give
 * up on the identical 403 (modelcontextprotocol/typescript-sdk#2255). `invalid_grant` is what
 * makes them drop the tokens and start a new authorization with the challenge's scope. Clients
 * that re-authorize directly (SEP-2350) never refresh, and never meet the mark.
 *
 * The refresh token itself is left untouched (not rotated, not revoked): a client that refreshes
 * again gets a token as before, and the session ends only by its usual rules.
 */
import type { Store } from '../../store/port.ts';

/** Options of {@link createStepUpMarks}. */
export interface StepUpMarksOptions {
  store: Store;
  /** How long a mark waits for the refresh, ms. Default 600000 (10 min, an authorization's life). */
  ttlMs?: number;
}

/** See the module comment. */
export interface StepUpMarks {
  /** Marks session `sessionId` as challenged for `scopes`. */
  mark(sessionId: string, scopes: readonly string[]): Promise<void>;
  /** Takes the mark (single use): the scopes it named, or undefined. */
  take(sessionId: string): Promise<string[] | undefined>;
}

/** Builds the marks over the storage port (key `stepup:{<sid>}`, in the session's hash slot). */
export function createStepUpMarks(options: StepUpMarksOptions): StepUpMarks {
  const ttlMs = options.ttlMs ?? 600_000;
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) throw new TypeError('ttlMs must be a positive integer');
  const key = (sessionId: string) => `stepup:{${sessionId}}`;
  return {
    async mark(sessionId, scopes) {
      await options.store.set(key(sessionId), JSON.stringify(scopes), ttlMs);
    },
    async take(sessionId) {
      const value = await options.store.take(key(sessionId));
      if (value === undefined) return undefined;
      const scopes: unknown = JSON.parse(value);
      return Array.isArray(scopes) ? scopes.filter((s): s is string => typeof s === 'string') : [];
    },
  };
}
