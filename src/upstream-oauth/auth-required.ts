/**
 * The auth_required signal: an upstream needs the user to authorize at its own
 * authorization server. Credential sources throw `AuthRequiredError`; the gateway path renders it
 * through the best channel the agent supports (URL elicitation, tool result, HTTP re-challenge,
 * JSON-RPC error). Nothing in it is a credential or personal data.
 */
export interface AuthRequired {
  /** The upstream's configured name. */
  upstream: string;
  /** Where the user must go: our `/oauth/upstream/start?…` URL (never the upstream AS directly). */
  authUrl: string;
  /** The pending flow's id (the `flow` parameter of `authUrl`). */
  flowId: string;
  /** Identifies the pending flow for URL elicitation (`elicitationId`) and `notifications/elicitation/complete`. */
  elicitationId: string;
  /** A sentence for the user that names `authUrl` (see {@link authRequiredMessage}). */
  message: string;
  /** Our scope that stands for "connected to this upstream" (the re-challenge channel asks for it). */
  connectScope: string;
}

export class AuthRequiredError extends Error {
  override name = 'AuthRequiredError';
  readonly authRequired: AuthRequired;
  constructor(authRequired: AuthRequired) {
    super(authRequired.message);
    this.authRequired = authRequired;
  }
}

/** Our scope meaning "this session may use upstream `name`, connected through its own OAuth". */
export function connectScopeFor(upstream: string): string {
  return `mcpgate:connect:${upstream}`;
}

/**
 * The sentence shown to the user: it carries the URL itself, because agents display a JSON-RPC
 * error's `message` and not its `data` (where `auth_url` also travels).
 */
export function authRequiredMessage(upstream: string, authUrl: string): string {
  return `Authorization is needed to use "${upstream}": open ${authUrl}, approve access, then retry.`;
}
