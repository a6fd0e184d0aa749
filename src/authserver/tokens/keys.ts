/**
 * Our token-signing keys: loaded from PEM text, algorithm detected from the key,
 * `kid` = the RFC 7638 JWK thumbprint. The first key signs; every key's public half is
 * published in the JWKS, so a new key can be introduced (listed second, then moved first) and an
 * old one retired (kept last until the tokens it signed have expired) without a flag day.
 */
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';
import { readSigningKey, type ReadSigningKey, type SigningAlg } from '../../config/signing-key.ts';

export type { SigningAlg };

/** A public key that verifies our tokens. */
export interface VerificationKey {
  kid: string;
  alg: SigningAlg;
  key: KeyObject;
  /** The public JWK as published (`kty`, key members, `kid`, `alg`, `use: "sig"`). */
  jwk: JWK;
}

/** The loaded key set; see {@link loadSigningKeys}. */
export interface SigningKeys {
  /** The key that signs: the first configured one. */
  signing: { kid: string; alg: SigningAlg; privateKey: KeyObject };
  /** Every public key by `kid`, the signing key included. */
  byKid: ReadonlyMap<string, VerificationKey>;
  /** The JWK Set document served at `/.well-known/jwks.json` (RFC 7517 §5). */
  jwks: { keys: JWK[] };
  /** Algorithms of the published keys (for `*_signing_alg_values_supported`). */
  algorithms: SigningAlg[];
  /** True when the key was generated at start-up (dev mode): tokens die with the process. */
  ephemeral: boolean;
}

/** Options of {@link loadSigningKeys}. */
export interface LoadSigningKeysOptions {
  /** PEM texts (`authServer.signingKeys`, `file:` references already resolved). The first must be a private key; later ones may be public keys. */
  pems: readonly string[];
  /** Allows an ephemeral ES256 key when `pems` is empty. */
  devMode: boolean;
  /** Told when an ephemeral key is generated. */
  warn(message: string): void;
}

/**
 * Loads the signing keys. Throws a `TypeError` naming the entry (`signingKeys[1]: …`) for a key it
 * cannot use: unreadable PEM, unsupported type or curve, RSA under 2048 bits, a public key in
 * first place, the same key twice. With no keys, generates an ephemeral ES256 key in dev mode
 * (with a warning) and refuses otherwise.
 */
export function loadSigningKeys(options: LoadSigningKeysOptions): SigningKeys {
  let pems = options.pems;
  let ephemeral = false;
  if (pems.length === 0) {
    if (!options.devMode) throw new TypeError('signingKeys: at least one signing key is required (an ephemeral key is allowed only in devMode)');
    options.warn('no signing key configured: using an ephemeral ES256 key; every token dies when the process stops (devMode only)');
    pems = [generateSigningKeyPem()];
    ephemeral = true;
  }

  const byKid = new Map<string, VerificationKey>();
  let signing: SigningKeys['signing'] | undefined;
  pems.forEach((pem, index) => {
    const where = `signingKeys[${index}]`;
    const { privateKey, publicKey, alg } = readPem(pem, where);
    if (index === 0 && !privateKey) throw new TypeError(`${where}: the first key signs, so it must be a private key`);
    const members = publicMembers(publicKey);
    const kid = thumbprint(members);
    if (byKid.has(kid)) throw new TypeError(`${where}: the same key is listed twice`);
    byKid.set(kid, { kid, alg, key: publicKey, jwk: { ...members, kid, alg, use: 'sig' } });
    if (index === 0) signing = { kid, alg, privateKey: privateKey! };
  });

  const keys = [...byKid.values()];
  return {
    signing: signing!,
    byKid,
    jwks: { keys: keys.map((k) => k.jwk) },
    algorithms: [...new Set(keys.map((k) => k.alg))],
    ephemeral,
  };
}

/**
 * A new signing key as PKCS#8 PEM, for `mcpgate keys generate`. Default ES256 (P-256): small
 * tokens and fast signatures; `RS256` gives a 3072-bit RSA key, `EdDSA` an Ed25519 key.
 */
export function generateSigningKeyPem(alg: 'ES256' | 'RS256' | 'EdDSA' = 'ES256'): string {
  const { privateKey } =
    alg === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : alg === 'RS256'
        ? generateKeyPairSync('rsa', { modulusLength: 3072 })
        : generateKeyPairSync('ed25519');
  return privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
}

/** A new storage encryption key: 32 random bytes, base64 (`storage.encryptionKeys[].key`, AES-256-GCM). */
export function generateStoreKey(): string {
  return randomBytes(32).toString('base64');
}

function readPem(pem: string, where: string): ReadSigningKey {
  try {
    return readSigningKey(pem);
  } catch (error) {
    throw new TypeError(`${where}: ${(error as Error).message}`);
  }
}

/** The RFC 7638 §3.2 required members of a public JWK, and nothing else. */
function publicMembers(key: KeyObject): JWK {
  const jwk = key.export({ format: 'jwk' });
  switch (jwk.kty) {
    case 'EC':
      return { crv: jwk.crv, kty: 'EC', x: jwk.x, y: jwk.y };
    case 'RSA':
      return { e: jwk.e, kty: 'RSA', n: jwk.n };
    default:
      return { crv: jwk.crv, kty: 'OKP', x: jwk.x };
  }
}

/** RFC 7638 §3: SHA-256 over the required members, lexicographically ordered, no whitespace. */
function thumbprint(members: JWK): string {
  const ordered = Object.fromEntries(Object.entries(members).sort(([a], [b]) => (a < b ? -1 : 1)));
  return createHash('sha256').update(JSON.stringify(ordered)).digest('base64url');
}
