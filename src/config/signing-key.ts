/**
 * What makes a PEM text usable as one of `authServer.signingKeys`: readable by node:crypto, of a
 * type and size we sign with. Here, below the authorization server, so the config schema (and so
 * `mcpgate check`) refuses exactly the keys the gateway would refuse at start-up.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';

/** The JWS algorithms we sign with (RFC 7518 §3.1, RFC 8037 §3.1). */
export type SigningAlg = 'ES256' | 'ES384' | 'ES512' | 'RS256' | 'EdDSA';

/** A signing key read from PEM: the private half when the PEM holds one, the public half always. */
export interface ReadSigningKey {
  privateKey?: KeyObject;
  publicKey: KeyObject;
  alg: SigningAlg;
}

const MIN_RSA_BITS = 2048;

/**
 * Reads one PEM key (PKCS#8, SEC1 or PKCS#1 private key; SPKI or PKCS#1 public key). Throws an
 * `Error` whose message says what is wrong and never quotes the key.
 */
export function readSigningKey(pem: string): ReadSigningKey {
  if (typeof pem !== 'string' || !pem.includes('-----BEGIN')) throw new Error('not a PEM key (no -----BEGIN … KEY----- line)');
  if (/-----BEGIN (?:RSA |EC )?PUBLIC KEY-----/.test(pem)) {
    let publicKey: KeyObject;
    try {
      publicKey = createPublicKey(pem);
    } catch {
      throw new Error('unreadable public key PEM');
    }
    return { publicKey, alg: algorithmOf(publicKey) };
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch {
    // The cause can quote key material; keep it out of the message.
    throw new Error('unreadable private key PEM (encrypted keys are not supported)');
  }
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicKey, alg: algorithmOf(publicKey) };
}

function algorithmOf(key: KeyObject): SigningAlg {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'ec':
      switch (details.namedCurve) {
        case 'prime256v1':
        case 'P-256':
          return 'ES256';
        case 'secp384r1':
        case 'P-384':
          return 'ES384';
        case 'secp521r1':
        case 'P-521':
          return 'ES512';
        default:
          throw new Error(`EC curve ${details.namedCurve ?? '?'} is not supported (use P-256)`);
      }
    case 'rsa':
      if ((details.modulusLength ?? 0) < MIN_RSA_BITS) throw new Error(`RSA keys must have at least ${MIN_RSA_BITS} bits`);
      return 'RS256';
    case 'ed25519':
      return 'EdDSA';
    default:
      throw new Error(`key type ${key.asymmetricKeyType ?? '?'} is not supported (use EC P-256, RSA or Ed25519)`);
  }
}
