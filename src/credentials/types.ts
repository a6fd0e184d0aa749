import type { IncomingHttpHeaders } from 'node:http';
import type { AuthMode } from '../config/schema.ts';
import type { RpcInfo } from '../gateway/jsonrpc.ts';

/**
 * Who is calling, once our access token has been verified.
 * Upstreams whose gateway has no login (no `idp:`) see no principal.
 */
export interface Principal {
  /** The user (the configured `userClaim` of the IdP's ID token). */
  subject: string;
  /** The IdP's `sub` of the user when it differs from `subject` (from the session; the access log's `log.user: sub`). */
  idpSubject?: string;
  /** The session / token family (`sid`): the key of the stored upstream credentials. */
  sessionId: string;
  clientId: string;
  scopes: string[];
  /** Expiry of the access token that was presented, epoch seconds. */
  expiresAt: number;
}

/** What the credential source knows about the request it supplies headers for. */
export interface CredentialRequest {
  principal: Principal | undefined;
  rpc: RpcInfo | undefined;
  /** The agent's MCP session (`Mcp-Session-Id`), if any. */
  mcpSessionId: string | undefined;
  signal: AbortSignal;
  /**
   * What `prefetch` started for this request, when it did: `headers` uses it instead of reading
   * the store again (first attempt only; a retry after an upstream 401 reads afresh).
   */
  prefetched?: Promise<unknown>;
}

/** An upstream's 401/403, held back from the agent so the credential source can act on it. */
export interface UpstreamRejection {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A complete answer for the agent, built instead of the upstream's (e.g. an auth_required tool result). */
export interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * What to do after an upstream rejected the credential:
 * - `retry`: replay the request once with freshly resolved headers (after a refresh);
 * - `respond`: answer the agent with this error (an HttpError: a re-login 401, a JSON-RPC auth_required error, …);
 * - `reply`: answer the agent with this response (e.g. a tool result telling the user which URL to open);
 * - `pass`: forward the upstream's answer unchanged.
 */
export type RejectionOutcome =
  | { action: 'retry' }
  | { action: 'respond'; error: Error }
  | { action: 'reply'; reply: Reply }
  | { action: 'pass' };

/**
 * Supplies the credential an upstream expects, by auth mode: one module per mode
 * behind this interface. `none` and `static` need no principal; `idp`, `id_token`, `oauth` and
 * `token_exchange` look the credential up from the principal's session.
 */
export interface CredentialSource {
  readonly mode: AuthMode;
  /**
   * Headers to add to the upstream request (e.g. `{ authorization: 'Bearer …' }`). Throws an
   * HttpError to refuse. A mode with nothing to look up (`none`, `static`) answers synchronously:
   * awaiting nothing still costs the request a promise and a turn of the microtask queue.
   */
  headers(request: CredentialRequest): Promise<Record<string, string>> | Record<string, string>;
  /**
   * Starts the store reads `headers` will need, as soon as the principal is known and alongside
   * the session's liveness check (one round trip instead of two). The promise is handed back to
   * `headers` as `request.prefetched`; it may reject (with what `headers` would throw). Modes
   * without a per-session credential have none.
   */
  prefetch?(request: Pick<CredentialRequest, 'principal' | 'signal'>): Promise<unknown>;
  /** Called when the upstream answered 401, or 403 with `insufficient_scope`. `attempt` is 0 on the first response. */
  rejected(request: CredentialRequest, rejection: UpstreamRejection, attempt: number): Promise<RejectionOutcome>;
}
