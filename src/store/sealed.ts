/**
 * Encryption at rest: the envelope every stored token, code verifier and client
 * secret is sealed in before it reaches a store, so a dump of Valkey yields nothing usable.
 *
 * Envelope: `v1.<key id>.<iv>.<ciphertext and tag>`, the last two base64url without padding.
 * AES-256-GCM with a random 96-bit IV; the additional authenticated data is `v1.<key id>.<name>`,
 * binding the value to its key id and to the store key (`name`) it was sealed for, so a sealed
 * value copied under another key (e.g. one user's refresh token row into another's) does not open.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';

/** One encryption key: an id written into every envelope it seals, and 32 random bytes. */
export interface SealingKey {
  /** 1–64 characters from `A–Z a–z 0–9 _ -`. */
  id: string;
  /** Exactly 32 bytes (AES-256). */
  key: Uint8Array;
}

/** Seals and opens values; see {@link createSealer}. */
export interface Sealer {
  /** Encrypts `plaintext` for the store key `name`; a fresh IV each time, so equal inputs differ. */
  seal(name: string, plaintext: string): string;
  /** Decrypts a value sealed for `name`; throws {@link SealedValueError} if it cannot. */
  open(name: string, sealed: string): string;
}

/** Why a sealed value could not be opened. */
export type SealedValueFailure = 'malformed' | 'unknown_key' | 'authentication';

/**
 * Thrown by `open`. The message never contains the value or the name: the first is secret and
 * the second often embeds a session or user id.
 */
export class SealedValueError extends Error {
  override name = 'SealedValueError';
  readonly reason: SealedValueFailure;
  constructor(reason: SealedValueFailure, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

const VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const KEY_ID = /^[A-Za-z0-9_-]{1,64}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/**
 * Creates a sealer. The first key seals; every key opens, so a key can be rotated by putting the
 * new one first and keeping the old one until the values it sealed have expired.
 * Keys are checked here (at least one, ids well-formed and unique, exactly 32 bytes each).
 *
 * Random 96-bit IVs keep AES-GCM safe for about 2^32 seals per key (NIST SP 800-38D §8.3);
 * rotate long before that.
 */
export function createSealer(options: { keys: readonly SealingKey[] }): Sealer {
  const keys = new Map<string, KeyObject>();
  if (!Array.isArray(options.keys) || options.keys.length === 0) {
    throw new TypeError('sealer: at least one encryption key is required');
  }
  for (const [i, { id, key }] of options.keys.entries()) {
    if (typeof id !== 'string' || !KEY_ID.test(id)) {
      throw new TypeError(`sealer: keys[${i}].id must be 1-64 characters of A-Z a-z 0-9 _ -`);
    }
    if (!(key instanceof Uint8Array) || key.byteLength !== KEY_BYTES) {
      throw new TypeError(`sealer: keys[${i}] ("${id}") must be exactly ${KEY_BYTES} bytes`);
    }
    if (keys.has(id)) throw new TypeError(`sealer: key id "${id}" is used twice`);
    keys.set(id, createSecretKey(key));
  }
  const [sealingId, sealingKey] = keys.entries().next().value as [string, KeyObject];

  return {
    seal(name, plaintext) {
      assertName(name);
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', sealingKey, iv);
      cipher.setAAD(aad(sealingId, name));
      const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()]);
      return `${VERSION}.${sealingId}.${iv.toString('base64url')}.${body.toString('base64url')}`;
    },

    open(name, sealed) {
      assertName(name);
      const parts = typeof sealed === 'string' ? sealed.split('.') : [];
      const [version, id, ivText, bodyText] = parts;
      if (parts.length !== 4 || version !== VERSION || id === undefined) {
        throw new SealedValueError('malformed', `not a sealed value (expected ${VERSION}.<key id>.<iv>.<data>)`);
      }
      const key = keys.get(id);
      if (key === undefined) {
        throw new SealedValueError('unknown_key', `sealed with unknown key id "${KEY_ID.test(id) ? id : '?'}"`);
      }
      const iv = decode(ivText);
      const body = decode(bodyText);
      if (iv?.byteLength !== IV_BYTES || body === undefined || body.byteLength < TAG_BYTES) {
        throw new SealedValueError('malformed', 'sealed value has a malformed IV or ciphertext');
      }
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
        decipher.setAAD(aad(id, name));
        decipher.setAuthTag(body.subarray(body.byteLength - TAG_BYTES));
        const plain = Buffer.concat([decipher.update(body.subarray(0, body.byteLength - TAG_BYTES)), decipher.final()]);
        return plain.toString('utf8');
      } catch (cause) {
        // GCM cannot tell a tampered value from one sealed for another name: both fail the tag check.
        throw new SealedValueError('authentication', 'sealed value failed authentication (tampered, or sealed for another name)', { cause });
      }
    },
  };
}

/**
 * A sealer that remembers what it last opened or sealed under each name, as long as the sealed
 * bytes are unchanged: the gateway path reads the same records on every request (the session,
 * the MCP session's owner, an upstream token), and an AES-GCM decryption costs a few µs each time
 * while comparing the stored text with the remembered one costs next to nothing. Any change to
 * the stored value (a refresh, a revocation, another replica's write) is a different text and is
 * opened afresh; a value that does not open is never remembered. Plaintexts stay in this
 * process's memory, where every opened value already is while it is used; at most `maxEntries`
 * names, the oldest forgotten first.
 */
export function withOpenedCache(sealer: Sealer, maxEntries: number): Sealer {
  if (!Number.isSafeInteger(maxEntries) || maxEntries <= 0) throw new TypeError('maxEntries must be a positive integer');
  const opened = new Map<string, { sealed: string; plain: string }>();
  function remember(name: string, sealed: string, plain: string): void {
    opened.delete(name);
    if (opened.size >= maxEntries) opened.delete(opened.keys().next().value!);
    opened.set(name, { sealed, plain });
  }
  return {
    seal(name, plaintext) {
      const sealed = sealer.seal(name, plaintext);
      remember(name, sealed, plaintext);
      return sealed;
    },
    open(name, sealed) {
      const hit = opened.get(name);
      if (hit !== undefined && hit.sealed === sealed) return hit.plain;
      const plain = sealer.open(name, sealed);
      remember(name, sealed, plain);
      return plain;
    },
  };
}

/**
 * The key id a value names when it has the shape of an envelope (`v1.<key id>.<iv>.<data>`), else
 * `undefined`. Looks only at the shape, proves nothing: `open` is what authenticates. Used by
 * `mcpgate keys reseal` to find the values a retiring key still seals; no unsealed value in the
 * store (JSON records, ids, counters) has this shape.
 */
export function sealedKeyId(value: string): string | undefined {
  const parts = value.split('.');
  if (parts.length !== 4 || parts[0] !== VERSION) return undefined;
  const [, id, iv, body] = parts as [string, string, string, string];
  const ivLength = Math.ceil((IV_BYTES * 4) / 3);
  if (!KEY_ID.test(id) || iv.length !== ivLength || !BASE64URL.test(iv) || !BASE64URL.test(body)) return undefined;
  return id;
}

/** The id can contain no `.`, so `v1.<id>.<name>` is unambiguous whatever the name holds. */
function aad(id: string, name: string): Buffer {
  return Buffer.from(`${VERSION}.${id}.${name}`, 'utf8');
}

function assertName(name: string): void {
  if (typeof name !== 'string' || name.length === 0) {
    throw new TypeError('sealer: name must be a non-empty string (the store key the value belongs to)');
  }
}

/** Strict base64url: Buffer.from() skips bad characters, which would make envelopes malleable. */
function decode(text: string | undefined): Buffer | undefined {
  if (text === undefined || !BASE64URL.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64url');
  return bytes.toString('base64url') === text ? bytes : undefined;
}
