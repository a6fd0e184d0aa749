/**
 * `WWW-Authenticate` (RFC 9110 §11.6.1): reading an upstream's challenges and writing ours.
 *
 * ```
 * WWW-Authenticate = #challenge
 * challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 * auth-param = token BWS "=" BWS ( token / quoted-string )
 * token68    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
 * ```
 * Commas separate both challenges and parameters, so after each comma the parser looks ahead:
 * `name =` continues the current challenge, anything else starts a new one.
 *
 * The input comes from servers we do not control. The parser is one left-to-right pass with
 * bounded look-ahead (every character is visited a constant number of times), never throws
 * on malformed input, skips what it cannot read up to the next comma, and keeps the rest.
 */

/** One challenge. Scheme and parameter names are lower-cased (they are case-insensitive, RFC 9110 §11.1, §11.2). */
export interface Challenge {
  scheme: string;
  /** Parameter values, unquoted and unescaped. The first occurrence of a repeated name wins. */
  params: ReadonlyMap<string, string>;
  /** The token68 form (e.g. `Negotiate <blob>`), when the challenge uses it instead of parameters. */
  token68?: string;
}

/** What a Bearer challenge tells a client (RFC 6750 §3, RFC 9728 §5.1). */
export interface BearerChallenge {
  /** RFC 9728 `resource_metadata`: where the protected resource metadata lives. Not validated here. */
  resourceMetadata?: string;
  /** RFC 6750 `scope`, split on spaces. */
  scope?: string[];
  /** RFC 6750 `error`, e.g. `invalid_token`, `insufficient_scope`. */
  error?: string;
  /** RFC 6750 `error_description`. Upstream text: log it, do not trust it. */
  errorDescription?: string;
}

/** Hostile headers cannot make us build unbounded structures; real ones carry a handful. */
const MAX_CHALLENGES = 64;
const MAX_PARAMS = 64;

const TCHAR = charTable("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
const TOKEN68 = charTable('-._~+/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz');
const COMMA = 0x2c;
const EQUALS = 0x3d;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;

function charTable(chars: string): Uint8Array {
  const table = new Uint8Array(128);
  for (let i = 0; i < chars.length; i++) table[chars.charCodeAt(i)] = 1;
  return table;
}

const isWs = (c: number) => c === 0x20 || c === 0x09;
const inTable = (table: Uint8Array, c: number) => c < 128 && table[c] === 1;

function skipWs(s: string, i: number): number {
  while (i < s.length && isWs(s.charCodeAt(i))) i++;
  return i;
}

function skipWsAndCommas(s: string, i: number): number {
  while (i < s.length && (isWs(s.charCodeAt(i)) || s.charCodeAt(i) === COMMA)) i++;
  return i;
}

function scan(table: Uint8Array, s: string, i: number): number {
  while (i < s.length && inTable(table, s.charCodeAt(i))) i++;
  return i;
}

/**
 * Reads a quoted-string starting at the opening quote.
 * @returns the unescaped value and the index after the closing quote, or `undefined` when unterminated.
 */
function readQuoted(s: string, i: number): { value: string; end: number } | undefined {
  const parts: string[] = [];
  let from = i + 1;
  for (let j = from; j < s.length; j++) {
    const c = s.charCodeAt(j);
    if (c === DQUOTE) {
      parts.push(s.slice(from, j));
      return { value: parts.join(''), end: j + 1 };
    }
    if (c === BACKSLASH) {
      // quoted-pair: the next character stands for itself.
      parts.push(s.slice(from, j));
      from = j + 1;
      j++;
    }
  }
  return undefined;
}

/** Skips unreadable input up to the next comma outside a quoted-string (or the end). Always advances. */
function skipJunk(s: string, i: number): number {
  let j = i;
  while (j < s.length) {
    const c = s.charCodeAt(j);
    if (c === COMMA) return j;
    if (c === DQUOTE) {
      const quoted = readQuoted(s, j);
      if (!quoted) return s.length;
      j = quoted.end;
    } else {
      j++;
    }
  }
  return Math.max(j, i + 1);
}

/** `name BWS "=" BWS value` at `i`; `undefined` when it is not one. */
function readParam(s: string, i: number): { name: string; value: string; end: number } | undefined {
  const nameEnd = scan(TCHAR, s, i);
  if (nameEnd === i) return undefined;
  let j = skipWs(s, nameEnd);
  if (s.charCodeAt(j) !== EQUALS) return undefined;
  j = skipWs(s, j + 1);
  const name = s.slice(i, nameEnd).toLowerCase();
  if (s.charCodeAt(j) === DQUOTE) {
    const quoted = readQuoted(s, j);
    return quoted && { name, value: quoted.value, end: quoted.end };
  }
  const valueEnd = scan(TCHAR, s, j);
  return valueEnd === j ? undefined : { name, value: s.slice(j, valueEnd), end: valueEnd };
}

/** After a comma: does `name =` follow (another parameter of the same challenge)? */
function paramFollows(s: string, i: number): boolean {
  const nameEnd = scan(TCHAR, s, i);
  return nameEnd > i && s.charCodeAt(skipWs(s, nameEnd)) === EQUALS;
}

/** Reads the auth-params of one challenge from `i`; returns where the next challenge starts. */
function readParams(s: string, i: number, params: Map<string, string>): number {
  for (;;) {
    const param = readParam(s, i);
    if (param) {
      if (!params.has(param.name) && params.size < MAX_PARAMS) params.set(param.name, param.value);
      i = skipWs(s, param.end);
      // Tolerate a missing comma between two parameters (`realm="a" error="b"`), seen in the wild.
      if (i < s.length && s.charCodeAt(i) !== COMMA && paramFollows(s, i)) continue;
    }
    if (i < s.length && s.charCodeAt(i) !== COMMA) i = skipJunk(s, i);
    const next = skipWsAndCommas(s, i);
    if (next >= s.length) return next;
    if (!paramFollows(s, next)) {
      if (scan(TCHAR, s, next) > next) return next; // a scheme: the next challenge starts here
      i = skipJunk(s, next); // an unreadable list element: skip it, stay in this challenge
      continue;
    }
    i = next;
  }
}

function parseLine(s: string, out: Challenge[]): void {
  let i = skipWsAndCommas(s, 0);
  while (i < s.length && out.length < MAX_CHALLENGES) {
    const schemeEnd = scan(TCHAR, s, i);
    if (schemeEnd === i || s.charCodeAt(skipWs(s, schemeEnd)) === EQUALS) {
      // Not a scheme (or a parameter with no challenge to belong to): skip it.
      i = skipWsAndCommas(s, skipJunk(s, i));
      continue;
    }
    const challenge: { scheme: string; params: Map<string, string>; token68?: string } = {
      scheme: s.slice(i, schemeEnd).toLowerCase(),
      params: new Map(),
    };
    out.push(challenge);
    const start = skipWs(s, schemeEnd);
    if (start === schemeEnd || start >= s.length || s.charCodeAt(start) === COMMA) {
      i = skipWsAndCommas(s, start); // a bare scheme, e.g. `Basic, Bearer realm="x"`
      continue;
    }
    // token68 only when nothing but padding and whitespace follows it up to a comma or the end;
    // `realm=x` scans as `realm=` followed by `x`, so it is read as a parameter.
    const t68End = scan(TOKEN68, s, start);
    let padEnd = t68End;
    while (s.charCodeAt(padEnd) === EQUALS) padEnd++;
    const after = skipWs(s, padEnd);
    if (t68End > start && (after >= s.length || s.charCodeAt(after) === COMMA)) {
      challenge.token68 = s.slice(start, padEnd);
      i = skipWsAndCommas(s, after);
      continue;
    }
    i = readParams(s, start, challenge.params);
  }
}

/**
 * Parses `WWW-Authenticate` header values (RFC 9110 §11.6.1, §11.2): several challenges per value
 * and several values (header lines), token or quoted-string parameter values, token68.
 * Never throws on malformed input and runs in linear time; unreadable parts are skipped.
 * At most 64 challenges and 64 parameters per challenge are kept.
 * @param header one header value, or the list of values when the header was repeated.
 */
export function parseWwwAuthenticate(header: string | readonly string[] | undefined): Challenge[] {
  const out: Challenge[] = [];
  for (const line of typeof header === 'string' ? [header] : (header ?? [])) {
    if (typeof line !== 'string') continue;
    parseLine(line, out);
    if (out.length >= MAX_CHALLENGES) break;
  }
  return out;
}

/**
 * The first Bearer challenge's RFC 6750 §3 / RFC 9728 §5.1 parameters, or `undefined` when
 * there is no Bearer challenge. Empty values count as absent.
 */
export function bearerChallenge(challenges: readonly Challenge[]): BearerChallenge | undefined {
  const bearer = challenges.find((c) => c.scheme === 'bearer');
  if (!bearer) return undefined;
  const get = (name: string) => bearer.params.get(name) || undefined;
  const result: BearerChallenge = {};
  const resourceMetadata = get('resource_metadata');
  if (resourceMetadata) result.resourceMetadata = resourceMetadata;
  const scope = get('scope')?.split(' ').filter(Boolean);
  if (scope?.length) result.scope = scope;
  const error = get('error');
  if (error) result.error = error;
  const errorDescription = get('error_description');
  if (errorDescription) result.errorDescription = errorDescription;
  return result;
}

/** What {@link formatBearerChallenge} puts in our challenge. */
export interface BearerChallengeParams {
  /** Absolute URL of our protected resource metadata (RFC 9728 §5.1). */
  resourceMetadata: string;
  /** Scopes the resource needs (RFC 6750 §3), each an RFC 6749 §3.3 scope-token. */
  scope?: readonly string[];
  /** RFC 6750 §3.1 error code, e.g. `invalid_token` (only when a token was sent) or `insufficient_scope`. */
  error?: string;
  /** Human-readable text; printable ASCII only (RFC 6750 §3). */
  errorDescription?: string;
}

// RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
// Printable ASCII and tab: no CR/LF (header injection), no other controls, no non-ASCII.
const PRINTABLE = /^[\t\x20-\x7e]*$/;

function quote(name: string, value: string): string {
  if (!PRINTABLE.test(value)) throw new RangeError(`WWW-Authenticate ${name} must be printable ASCII`);
  return `${name}="${value.replace(/[\\"]/g, '\\$&')}"`;
}

/**
 * Builds OUR `WWW-Authenticate: Bearer …` value (RFC 6750 §3, RFC 9728 §5.1):
 * `Bearer resource_metadata="…", scope="…", error="…", error_description="…"`.
 * Every value is a quoted-string with `"` and `\` escaped.
 * @throws RangeError when a value holds control or non-ASCII characters, or a scope is not a scope-token:
 *   these values are ours, so that is a bug, never something to send.
 */
export function formatBearerChallenge(params: BearerChallengeParams): string {
  const parts = [quote('resource_metadata', params.resourceMetadata)];
  if (params.scope?.length) {
    for (const s of params.scope) if (!SCOPE_TOKEN.test(s)) throw new RangeError('WWW-Authenticate scope: invalid scope token');
    parts.push(quote('scope', params.scope.join(' ')));
  }
  if (params.error !== undefined) parts.push(quote('error', params.error));
  if (params.errorDescription !== undefined) parts.push(quote('error_description', params.errorDescription));
  return `Bearer ${parts.join(', ')}`;
}
