/**
 * The browser cookies of our authorization server: our login cookie (who this browser signed in
 * as), the remembered consents, the CSRF binding of our forms, and the nonce that binds an IdP
 * round trip to the browser that started it.
 *
 * Values are `base64url(JSON).base64url(HMAC-SHA256)`; the MAC covers the cookie's name too, so
 * one cookie's value cannot be replayed as another. Payloads carry their own expiry (`exp`,
 * epoch seconds), checked on read whatever the browser does with `Max-Age`.
 *
 * Names carry the `__Host-` prefix (Secure, Path=/, no Domain: no subdomain can set or shadow
 * them). Browsers refuse `__Host-` and `Secure` cookies over plain http, so when the public URL
 * is http (dev mode only) the prefix and `Secure` are dropped.
 */
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** The cookies we set, by base name. */
export type CookieName = 'mcpgate-login' | 'mcpgate-consent' | 'mcpgate-csrf' | 'mcpgate-idp';

/** Options of {@link createCookieCodec}. */
export interface CookieCodecOptions {
  /** HMAC key, at least 32 bytes. Shared by every replica (see `deriveCookieKey`). */
  key: Uint8Array;
  /** False only for an http public URL (dev mode): no `__Host-` prefix, no `Secure`. */
  secure: boolean;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
}

/** Signs, serializes, reads and verifies our cookies. */
export interface CookieCodec {
  /** The cookie's name as sent to the browser (`__Host-mcpgate-login` or `mcpgate-login`). */
  nameOf(name: CookieName): string;
  /**
   * A `Set-Cookie` value for `payload`, valid for `maxAgeSeconds` (the payload's `exp`).
   * `session: true` omits `Max-Age`, so the browser drops it when it closes.
   */
  serialize(name: CookieName, payload: Record<string, unknown>, options: { maxAgeSeconds: number; session?: boolean }): string;
  /** A `Set-Cookie` value that deletes the cookie. */
  clear(name: CookieName): string;
  /** The verified, unexpired payload of the cookie in the request, or undefined. */
  read<T extends Record<string, unknown>>(req: IncomingMessage, name: CookieName): T | undefined;
  /** A MAC (base64url) over `parts` under `purpose`, with the cookie key (CSRF tokens, consent entries). */
  mac(purpose: string, ...parts: string[]): string;
  /** Constant-time check of a MAC made by `mac`. */
  verifyMac(given: string, purpose: string, ...parts: string[]): boolean;
}

/** Creates the codec. @throws TypeError for a key shorter than 32 bytes. */
export function createCookieCodec(options: CookieCodecOptions): CookieCodec {
  if (options.key.byteLength < 32) throw new TypeError('the cookie key must be at least 32 bytes');
  const key = Buffer.from(options.key);
  const now = options.now ?? Date.now;
  const attributes = options.secure ? '; Path=/; Secure; HttpOnly; SameSite=Lax' : '; Path=/; HttpOnly; SameSite=Lax';
  const nameOf = (name: CookieName) => (options.secure ? `__Host-${name}` : name);
  const mac = (name: string, body: string) => createHmac('sha256', key).update(`${name}=${body}`).digest();

  const purposeMac = (purpose: string, parts: string[]) =>
    // Length-prefixed parts: ("a", "bc") and ("ab", "c") must not share a MAC.
    createHmac('sha256', key).update(`${purpose}\n${parts.map((p) => `${p.length}:${p}`).join('\n')}`).digest();

  return {
    nameOf,
    mac: (purpose, ...parts) => purposeMac(purpose, parts).toString('base64url'),
    verifyMac(given, purpose, ...parts) {
      const expected = purposeMac(purpose, parts);
      const actual = Buffer.from(given, 'base64url');
      return actual.length === expected.length && timingSafeEqual(actual, expected);
    },
    serialize(name, payload, { maxAgeSeconds, session }) {
      const full = nameOf(name);
      const body = Buffer.from(JSON.stringify({ ...payload, exp: Math.floor(now() / 1000) + maxAgeSeconds })).toString('base64url');
      const value = `${body}.${mac(full, body).toString('base64url')}`;
      return `${full}=${value}${attributes}${session ? '' : `; Max-Age=${maxAgeSeconds}`}`;
    },
    clear(name) {
      return `${nameOf(name)}=${attributes}; Max-Age=0`;
    },
    read<T extends Record<string, unknown>>(req: IncomingMessage, name: CookieName): T | undefined {
      const full = nameOf(name);
      const raw = cookieValue(req.headers.cookie, full);
      if (!raw) return undefined;
      const dot = raw.indexOf('.');
      if (dot <= 0) return undefined;
      const body = raw.slice(0, dot);
      const given = Buffer.from(raw.slice(dot + 1), 'base64url');
      const expected = mac(full, body);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
      let payload: unknown;
      try {
        payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
      } catch {
        return undefined;
      }
      if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return undefined;
      const exp = (payload as { exp?: unknown }).exp;
      if (typeof exp !== 'number' || exp * 1000 <= now()) return undefined;
      return payload as T;
    },
  };
}

/** The value of cookie `name` in a `Cookie` header (the first one, as browsers send the most specific first). */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Who this browser signed in as, according to our login cookie. */
export interface LoginCookie {
  /** The user (`userClaim` of the IdP's ID token). */
  sub: string;
  /**
   * The session created at that login. Absent after a browser-only sign-in (`/oauth/login`),
   * which proves who the user is but creates no session.
   */
  sid?: string;
}

/** How long our login cookie vouches for a browser, in seconds: 12 hours. */
export const LOGIN_COOKIE_SECONDS = 12 * 3600;

/**
 * Our login cookie (`__Host-mcpgate-login`): set after every successful IdP callback, read where
 * a later step must know that this browser belongs to a given user (issue 5: the upstream
 * connect URL checks it before redirecting on). A browser-session cookie.
 */
export function loginCookie(codec: CookieCodec) {
  return {
    /** The `Set-Cookie` value naming `sub` and, when there is one, `sid`. */
    issue: (login: LoginCookie) =>
      codec.serialize('mcpgate-login', login.sid === undefined ? { sub: login.sub } : { sub: login.sub, sid: login.sid }, { maxAgeSeconds: LOGIN_COOKIE_SECONDS, session: true }),
    /** The user this browser signed in as, or undefined (absent, forged or expired). */
    read(req: IncomingMessage): LoginCookie | undefined {
      const payload = codec.read<{ sub?: unknown; sid?: unknown }>(req, 'mcpgate-login');
      if (typeof payload?.sub !== 'string') return undefined;
      if (payload.sid === undefined) return { sub: payload.sub };
      return typeof payload.sid === 'string' ? { sub: payload.sub, sid: payload.sid } : undefined;
    },
    clear: () => codec.clear('mcpgate-login'),
  };
}

/**
 * The CSRF binding of our forms (the consent page, the upstream connect confirmation): a random
 * nonce in a cookie of this browser (`mcpgate-csrf`), and in the form a MAC over the nonce and
 * what the form acts on. A site that makes the browser post the form knows neither. An existing
 * nonce is kept, so a second form in another tab does not break the first.
 */
export function formTokens(codec: CookieCodec) {
  const nonceOf = (req: IncomingMessage) => {
    const n = codec.read<{ n?: unknown }>(req, 'mcpgate-csrf')?.n;
    return typeof n === 'string' ? n : undefined;
  };
  return {
    /** The token for a form acting on `parts` under `purpose`, and the cookie (valid `maxAgeSeconds`) to set with the page. */
    issue(req: IncomingMessage, maxAgeSeconds: number, purpose: string, ...parts: string[]): { token: string; setCookie: string } {
      const nonce = nonceOf(req) ?? randomBytes(16).toString('base64url');
      return { token: codec.mac(purpose, ...parts, nonce), setCookie: codec.serialize('mcpgate-csrf', { n: nonce }, { maxAgeSeconds }) };
    },
    /** True when `token` was issued to this browser for `parts` under `purpose` (constant time). */
    verify(req: IncomingMessage, token: string, purpose: string, ...parts: string[]): boolean {
      const nonce = nonceOf(req);
      return token !== '' && nonce !== undefined && codec.verifyMac(token, purpose, ...parts, nonce);
    },
  };
}

/**
 * Binds each round trip through the company IdP to the browser that started it (login CSRF,
 * RFC 6749 §10.12): without it, anyone could start a sign-in, stop before the IdP's redirect back
 * and send that callback URL to a victim, whose browser would then be signed in to mcpgate as
 * the attacker (and could, for example, connect the victim's upstream account to the attacker's
 * session). The start sets a short-lived nonce cookie (`__Host-mcpgate-idp`, as long as the
 * parked request) and puts a MAC over the nonce into the IdP `state`; the callback accepts the
 * state only from a browser whose cookie holds that nonce. An existing nonce is kept, so sign-ins
 * in several tabs each complete.
 */
export function idpRoundTrip(codec: CookieCodec, ttlMs: number) {
  const maxAgeSeconds = Math.max(1, Math.ceil(ttlMs / 1000));
  const nonceOf = (req: IncomingMessage) => {
    const n = codec.read<{ n?: unknown }>(req, 'mcpgate-idp')?.n;
    return typeof n === 'string' ? n : undefined;
  };
  return {
    /** A fresh IdP `state` starting with `prefix`, and the cookie to set with the redirect to the IdP. */
    start(req: IncomingMessage, prefix = ''): { state: string; setCookie: string } {
      const nonce = nonceOf(req) ?? randomBytes(32).toString('base64url');
      const random = `${prefix}${randomBytes(32).toString('base64url')}`;
      return { state: `${random}.${codec.mac('idp-state', random, nonce)}`, setCookie: codec.serialize('mcpgate-idp', { n: nonce }, { maxAgeSeconds }) };
    },
    /** True when `state` was started by this browser (its nonce cookie is present and matches). */
    startedHere(req: IncomingMessage, state: string): boolean {
      const dot = state.lastIndexOf('.');
      const nonce = nonceOf(req);
      return dot > 0 && nonce !== undefined && codec.verifyMac(state.slice(dot + 1), 'idp-state', state.slice(0, dot), nonce);
    },
  };
}

/**
 * The cookie MAC key, the same on every replica without another secret to manage: derived
 * (HKDF-SHA256, its own `info`, so it is independent of the keys it comes from) from the first
 * store encryption key, else from the first signing key. Without either (dev mode with an
 * ephemeral signing key) it is random: cookies then die with the process.
 */
export function deriveCookieKey(material: { encryptionKey?: string; signingKeyPem?: string }): { key: Uint8Array; ephemeral: boolean } {
  const ikm = material.encryptionKey
    ? Buffer.from(material.encryptionKey, 'base64')
    : material.signingKeyPem
      ? Buffer.from(material.signingKeyPem, 'utf8')
      : undefined;
  if (!ikm || ikm.length === 0) return { key: randomBytes(32), ephemeral: true };
  return { key: new Uint8Array(hkdfSync('sha256', ikm, 'mcpgate', 'cookie-mac v1', 32)), ephemeral: false };
}
