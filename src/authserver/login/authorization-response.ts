/**
 * Authorization responses (RFC 6749 §4.1.2, §4.1.2.1) sent back to the client's redirect URI,
 * with `iss` (RFC 9207 §2) so a client talking to several authorization servers can tell which
 * one answered (the mix-up attack). Only for a redirect URI already matched against the
 * client's registration: anything earlier gets an HTML error page instead.
 */
import type { ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AuthStores, PendingAuthorization } from '../records/records.ts';

/** Error codes of the authorization endpoint (RFC 6749 §4.1.2.1, RFC 8707 §2, OIDC Core §3.1.2.6). */
export type AuthorizationErrorCode =
  | 'invalid_request'
  | 'unauthorized_client'
  | 'access_denied'
  | 'unsupported_response_type'
  | 'invalid_scope'
  | 'server_error'
  | 'temporarily_unavailable'
  | 'invalid_target'
  | 'login_required'
  | 'request_not_supported'
  | 'request_uri_not_supported';

/** The client's redirect URI with `params` added to its query (its own query parameters kept). */
export function redirectTarget(redirectUri: string, params: Record<string, string | undefined>): string {
  const url = new URL(redirectUri);
  for (const [name, value] of Object.entries(params)) if (value !== undefined) url.searchParams.append(name, value);
  return url.href;
}

/** Redirects the browser (303: the next request is a GET, whether this answered a GET or a form POST). */
export function sendRedirect(res: ServerResponse, location: string, setCookie: string[] = []): void {
  const headers: Record<string, string | string[]> = { location, 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' };
  if (setCookie.length > 0) headers['set-cookie'] = setCookie;
  res.writeHead(303, headers);
  res.end();
}

/** Sends an error response to the client: `error`, `error_description`, the client's `state`, our `iss`. */
export function sendAuthorizationError(
  res: ServerResponse,
  to: { redirectUri: string; state: string | undefined; issuer: string },
  error: AuthorizationErrorCode,
  description: string,
  setCookie: string[] = [],
): void {
  sendRedirect(res, redirectTarget(to.redirectUri, { error, error_description: description, state: to.state, iss: to.issuer }), setCookie);
}

/** Options of {@link issueAuthorizationCode}. */
export interface IssueCodeOptions {
  stores: Pick<AuthStores, 'codes'>;
  issuer: string;
  /** Lifetime of the code, milliseconds (1 to 10 minutes). */
  codeTtlMs: number;
  now: () => number;
}

/**
 * Issues our authorization code (single use, stored under its hash, bound to the client, the
 * redirect URI, the PKCE challenge, the resource, the scopes and the session) and returns the
 * redirect to the client that carries it.
 */
export async function issueAuthorizationCode(
  options: IssueCodeOptions,
  pending: PendingAuthorization,
  login: { subject: string; sessionId: string },
): Promise<string> {
  const code = randomBytes(32).toString('base64url');
  await options.stores.codes.put(
    code,
    {
      clientId: pending.clientId,
      redirectUri: pending.redirectUri,
      codeChallenge: pending.codeChallenge,
      resource: pending.resource,
      scopes: pending.scopes,
      subject: login.subject,
      sessionId: login.sessionId,
      createdAt: options.now(),
    },
    options.codeTtlMs,
  );
  return redirectTarget(pending.redirectUri, { code, state: pending.clientState, iss: options.issuer });
}
