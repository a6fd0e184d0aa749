/**
 * Redirect URI rules for registration (DCR and metadata documents) and for the authorization
 * request (OAuth 2.1 §2.3 and RFC 8252 §7 for native apps):
 * - `https:` on any host;
 * - `http:` only on a loopback host (`127.0.0.1`, `[::1]`, `localhost`), with any port (§7.3);
 * - any other syntactically valid scheme (RFC 3986 §3.1) as a private-use scheme (§7.1): editors
 *   register `cursor:`, `windsurf:`, `vscode:`, `vscode-insiders:`, which are not the
 *   reverse-domain names §7.1 recommends but are what the clients people use send;
 * - never a scheme of {@link NEVER_REDIRECT_SCHEMES} (`javascript:`, `data:`, `file:`, …), whatever
 *   the configuration says, and never one the operator denies or leaves out of an allow list;
 * - never a fragment, never credentials.
 * Matching is exact string comparison, except that the port of a loopback redirect is ignored.
 */
import { NEVER_REDIRECT_SCHEMES, URI_SCHEME } from '../../config/redirect-schemes.ts';

/** Longest redirect URI accepted, in characters. */
export const MAX_REDIRECT_URI_LENGTH = 2000;

/**
 * The operator's word on private-use schemes (`authServer.registration.redirectSchemes`), all in
 * lower case. `allow`, when set, lists the only private-use schemes accepted (`https:` and
 * loopback `http:` stay accepted); `deny` lists schemes refused, `https` and `http` included.
 */
export interface RedirectSchemePolicy {
  allow?: readonly string[];
  deny: readonly string[];
}

/** Any syntactically valid private-use scheme; only the built-in refusals apply. */
export const OPEN_REDIRECT_SCHEMES: RedirectSchemePolicy = Object.freeze({ deny: [] });

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
const NEVER = new Set(NEVER_REDIRECT_SCHEMES);

/** Why `uri` cannot be a redirect URI, or undefined when it can. The reason is safe to show. */
export function redirectUriProblem(uri: unknown, policy: RedirectSchemePolicy = OPEN_REDIRECT_SCHEMES): string | undefined {
  if (typeof uri !== 'string' || uri.length === 0) return 'must be a non-empty string';
  if (uri.length > MAX_REDIRECT_URI_LENGTH) return `must be at most ${MAX_REDIRECT_URI_LENGTH} characters`;
  // The URL parser drops tabs, newlines and edge spaces, so the URI it reads would not be the
  // string stored and compared: refuse them rather than disagree with it.
  if (/[\s\p{Cc}]/u.test(uri)) return 'must not contain spaces or control characters';
  // RFC 6749 §3.1.2: the code is appended to the query; a fragment would keep it from the app.
  if (uri.includes('#')) return 'must not contain a fragment';
  const colon = uri.indexOf(':');
  if (colon < 1 || !URI_SCHEME.test(uri.slice(0, colon)) || !URL.canParse(uri)) return 'must be an absolute URI';
  const url = new URL(uri);
  // Userinfo would let `https://trusted.example@evil.example/` read as the trusted host on the consent page.
  if (url.username || url.password) return 'must not contain credentials';
  const scheme = url.protocol.slice(0, -1);
  if (NEVER.has(scheme)) return `must not use the ${scheme}: scheme`;
  if (policy.deny.includes(scheme)) return `uses the ${scheme}: scheme, which this server does not accept`;
  switch (scheme) {
    case 'https':
      return url.hostname ? undefined : 'must name a host';
    case 'http':
      return LOOPBACK_HOSTS.has(url.hostname) ? undefined : 'http is allowed only on a loopback host (127.0.0.1, [::1], localhost)';
    default:
      if (policy.allow && !policy.allow.includes(scheme)) {
        const accepted = ['https', 'http (loopback)', ...policy.allow.map((s) => `${s}:`)].join(', ');
        return `uses the ${scheme}: scheme, which this server does not accept (accepted: ${accepted})`;
      }
      return undefined;
  }
}

/**
 * The private-use scheme of `uri` (`cursor` for `cursor://…`), or undefined for `http(s):`: the
 * consent page says which app on the device such a redirect opens.
 */
export function privateUseScheme(uri: string): string | undefined {
  if (!URL.canParse(uri)) return undefined;
  const scheme = new URL(uri).protocol.slice(0, -1);
  return scheme === 'http' || scheme === 'https' ? undefined : scheme;
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
