/**
 * The records of the upstream OAuth client: what the gateway keeps while a user
 * connects to an upstream's own authorization server, and afterwards. All times are epoch
 * milliseconds. Every record holding a token, verifier or client secret is sealed at rest.
 */

/** RFC 6749 §2.3 client authentication at the token endpoint, as RFC 7591 §2 names it. */
export type TokenEndpointAuthMethod = 'none' | 'client_secret_basic' | 'client_secret_post';

/** How the gateway obtained its client at an upstream's authorization server. */
export type ClientSource = 'preconfigured' | 'cimd' | 'dcr';

/** Our client at one upstream authorization server. */
export interface UpstreamClient {
  clientId: string;
  clientSecret?: string;
  authMethod: TokenEndpointAuthMethod;
  source: ClientSource;
}

/** The endpoints of the authorization server a flow or token belongs to, fixed when the flow starts. */
export interface AuthorizationServerEndpoints {
  /** RFC 8414 `issuer`, checked against RFC 9207 `iss` in the callback. */
  issuer: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  revocationEndpoint?: string;
  /** RFC 9207 §3: the server promises `iss` in every authorization response, so its absence is an error. */
  issParameterSupported: boolean;
}

/**
 * One pending connection of a user to an upstream: created when an upstream needs
 * authorization, opened through `/oauth/upstream/start?flow=<flowId>`, consumed by the callback.
 */
export interface UpstreamFlow {
  /** Random; the only thing the URL handed to the agent carries. */
  flowId: string;
  /** Random `state` sent to the authorization server; distinct from `flowId`, never shown to the agent. */
  state: string;
  /** PKCE verifier (RFC 7636), kept server-side only. */
  codeVerifier: string;
  /** The user (`sub`) and the session (`sid`) the token will belong to. */
  subject: string;
  sessionId: string;
  /** The upstream's configured name, and its MCP URL (the RFC 8707 `resource`). */
  upstream: string;
  resource: string;
  server: AuthorizationServerEndpoints;
  client: UpstreamClient;
  /** Scopes requested; empty when the request carries no `scope`. */
  scopes: string[];
  /** For URL elicitation and `notifications/elicitation/complete`. */
  elicitationId: string;
  /** The agent's MCP session when the flow started, if any. */
  mcpSessionId?: string;
  /** A path under our public URL the browser goes to after the callback, instead of the "connected" page. */
  returnTo?: string;
  createdAt: number;
  expiresAt: number;
}

/** A user's token for one upstream, obtained at the upstream's own authorization server. */
export interface UpstreamToken {
  upstream: string;
  /** The MCP URL the token was requested for (RFC 8707 `resource`). */
  resource: string;
  server: AuthorizationServerEndpoints;
  /** The client the token was issued to: refresh and revocation must use the same one. */
  client: UpstreamClient;
  /** Granted scopes (the token response's `scope`, else the requested ones, RFC 6749 §5.1). */
  scopes: string[];
  accessToken: string;
  refreshToken?: string;
  /** Access-token expiry; undefined when the server did not say (`expires_in` absent). */
  expiresAt?: number;
  obtainedAt: number;
}

/** A client registered by RFC 7591 dynamic registration, cached per (our issuer, their issuer, redirect URI, scopes). */
export interface DcrRegistration {
  clientId: string;
  clientSecret?: string;
  authMethod: TokenEndpointAuthMethod;
  /** RFC 7591 §3.2.1 `client_secret_expires_at` in milliseconds; undefined when it does not expire. */
  secretExpiresAt?: number;
  registeredAt: number;
  /** RFC 7592 §3: the bearer token that manages this registration (sealed with the record). */
  registrationAccessToken?: string;
  /** RFC 7592 §3: where this registration is read, updated and deleted. */
  registrationClientUri?: string;
}
