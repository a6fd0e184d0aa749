/**
 * The redirect URI schemes no configuration can admit. A redirect is a browser navigation that
 * carries an authorization code: these schemes run script in the page that follows the redirect
 * (`javascript:`, `vbscript:`), show content the attacker wrote under an opaque or our own origin
 * (`data:`, `blob:`, `filesystem:`, `about:`, `view-source:`, `jar:`), read the user's own files
 * (`file:`), or send the code off to a host through something other than a browser page
 * (`ftp:`, `ws:`, `wss:`). Kept here, beside the schema that refuses them in
 * `authServer.registration.redirectSchemes.allow`, and used by the registration rules.
 */
export const NEVER_REDIRECT_SCHEMES: readonly string[] = Object.freeze([
  'javascript',
  'vbscript',
  'data',
  'blob',
  'filesystem',
  'about',
  'view-source',
  'jar',
  'file',
  'ftp',
  'ws',
  'wss',
]);

/** RFC 3986 §3.1: `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`. */
export const URI_SCHEME = /^[a-z][a-z0-9+.-]*$/i;
