/**
 * Redirect URI rules for registration (DCR and metadata documents) and for the authorization
 * request (OAuth 2.1 §2.3 and RFC 8252 §7 for native apps):
 * - `https:` on any host;
 * - `http:` only on a loopback host (`127.0.0.1`, `[::1]`, `localhost`), with any port (§7.3);
 * - a private-use scheme in reverse-domain form, i.e. containing a dot (§7.1);
 * - never a fragment, never credentials.
 * Matching is exact string comparison, except that the port of a loopback redirect is ignored.
 */

/** Longest redirect URI accepted, in characters. */
export const MAX_REDIRECT_URI_LENGTH = 2000;

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
const SCHEME = /^[a-z][a-z0-9+.-]*:/i;

/** Why `uri` cannot be a redirect URI, or undefined when it can. The reason is safe to show. */
export function redirectUriProblem(uri: unknown): string | undefined {
  if (typeof uri !== 'string' || uri.length === 0) return 'must be a non-empty string';
  if (uri.length > MAX_REDIRECT_URI_LENGTH) return `must be at most ${MAX_REDIRECT_URI_LENGTH} characters`;
  if (uri.includes('#')) return 'must not contain a fragment';
  if (!SCHEME.test(uri) || !URL.canParse(uri)) return 'must be an absolute URI';
  const url = new URL(uri);
  if (url.username || url.password) return 'must not contain credentials';
  switch (url.protocol) {
    case 'https:':
      return url.hostname ? undefined : 'must name a host';
    case 'http:':
      return LOOPBACK_HOSTS.has(url.hostname) ? undefined : 'http is allowed only on a loopback host (127.0.0.1, [::1], localhost)';
    default:
      // RFC 8252 §7.1: private-use schemes are reverse domain names, which rules out
      // `javascript:`, `data:`, `file:` and every other scheme a browser gives meaning to.
      return url.protocol.slice(0, -1).includes('.') ? undefined : 'must be https, loopback http, or a private-use scheme with a dot (e.g. com.example.app:/callback)';
  }
}

/** True when `uri` is an `http:` URI on a loopback host: the app runs on the user's computer. */
export function isLoopbackRedirect(uri: string): boolean {
  if (!URL.canParse(uri)) return false;
  const url = new URL(uri);
  return url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname);
}

/**
 * The registered redirect URI that `requested` matches, or undefined. Exact string match, except
 * that a loopback `http:` URI matches whatever its port (RFC 8252 §7.3: native apps get an
 * ephemeral port from the OS at run time).
 */
export function matchRedirectUri(registered: readonly string[], requested: string): string | undefined {
  if (registered.includes(requested)) return requested;
  if (redirectUriProblem(requested) !== undefined || !isLoopbackRedirect(requested)) return undefined;
  const wanted = withoutPort(requested);
  return registered.find((candidate) => isLoopbackRedirect(candidate) && withoutPort(candidate) === wanted) ? requested : undefined;
}

function withoutPort(uri: string): string {
  const url = new URL(uri);
  return `${url.protocol}//${url.hostname}${url.pathname}${url.search}`;
}
