/**
 * The scopes of our authorization server. Every upstream resource behind the
 * gateway asks for the same base scope: it is what the resource metadata advertises
 * (`scopes_supported`), what the 401 challenge names, what an agent that follows the MCP
 * scope-selection rules requests, and what the gateway path requires in the token.
 * The authorization endpoint grants these when a client omits `scope` (RFC 6749 §3.3).
 */
export const RESOURCE_SCOPES: readonly string[] = ['mcp'];
