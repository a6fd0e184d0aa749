/**
 * The request target (RFC 9112 §3.2): the path the front door routes on, cut without a URL
 * parser when the target is plain, and the target parsed against our origin when needed.
 */

/** A request target parsed against our origin; one that cannot be parsed counts as `/`. */
export function parseTarget(target: string, origin: string): URL {
  try {
    return new URL(target, origin);
  } catch {
    return new URL('/', origin);
  }
}

/** Path characters the WHATWG URL parser leaves as they are (no percent-encoding, no backslash). */
const PLAIN_PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/;
/** A `.` or `..` segment, which the parser would resolve. */
const DOT_SEGMENT = /\/\.\.?(?:\/|$)/;

/**
 * The path of an origin-form target (RFC 9112 §3.2.1) when `new URL(target, origin).pathname`
 * would return it unchanged; undefined otherwise (percent signs, dot segments, `//`, characters
 * the parser encodes), and the caller parses. test/http/request-target.test.ts holds the two equal.
 */
export function plainPath(target: string): string | undefined {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  if (path.charCodeAt(1) === 0x2f || !PLAIN_PATH.test(path) || DOT_SEGMENT.test(path)) return undefined;
  return path;
}
