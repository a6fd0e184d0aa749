/**
 * The answers that send an agent (back) to our authorization server: 401 with a Bearer challenge
 * pointing at the resource's RFC 9728 metadata, and 403 `insufficient_scope`.
 * Shared by the JWT check on the gateway path and by the credential sources that end a session.
 */
import { InsufficientScope, InvalidToken } from '../../http/errors.ts';
import { formatBearerChallenge } from '../../upstream-oauth/www-authenticate.ts';

/**
 * The protected resource metadata URL of a resource (RFC 9728 §3.1): `/.well-known/oauth-protected-resource`
 * inserted between the host and the path, e.g. `https://gw.example.com/kube/mcp` →
 * `https://gw.example.com/.well-known/oauth-protected-resource/kube/mcp`.
 */
export function resourceMetadataUrl(resource: string): string {
  const url = new URL(resource);
  const path = url.pathname === '/' ? '' : url.pathname;
  return `${url.origin}/.well-known/oauth-protected-resource${path}`;
}

/** Which resource is being refused, and with what. */
export interface ChallengeOptions {
  /** The upstream's resource URL (RFC 8707). */
  resource: string;
  /** The scopes the resource needs (RFC 6750 §3 `scope`). */
  scopes: readonly string[];
  /** Text for `error_description` and the JSON body; printable ASCII, no secret. */
  description?: string;
}

/**
 * 401 for a missing or unusable token. RFC 6750 §3.1: the `invalid_token` error code is sent only
 * when a token was presented; a request without one gets the bare challenge, which is what starts
 * discovery in an MCP client.
 */
export function unauthorized(options: ChallengeOptions & { tokenSent: boolean }): InstanceType<typeof InvalidToken> {
  const description = options.description ?? (options.tokenSent ? 'the access token is invalid' : 'an access token is required');
  const challenge = formatBearerChallenge({
    resourceMetadata: resourceMetadataUrl(options.resource),
    scope: options.scopes,
    ...(options.tokenSent ? { error: 'invalid_token', errorDescription: description } : {}),
  });
  return new InvalidToken(description, { headers: { 'www-authenticate': challenge } });
}

/** 403 `insufficient_scope` naming the scopes needed (RFC 6750 §3.1), so the agent can step up. */
export function insufficientScope(options: ChallengeOptions): InstanceType<typeof InsufficientScope> {
  const description = options.description ?? `this resource needs the scopes: ${options.scopes.join(' ')}`;
  const challenge = formatBearerChallenge({
    resourceMetadata: resourceMetadataUrl(options.resource),
    scope: options.scopes,
    error: 'insufficient_scope',
    errorDescription: description,
  });
  return new InsufficientScope(description, { headers: { 'www-authenticate': challenge } });
}
