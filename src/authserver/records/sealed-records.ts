/**
 * What every domain store of the authorization server shares: the key names, sealing a record
 * for the key it is stored under, opening it again (a value that does not open counts as absent)
 * and the clock. The key layout and why every record is sealed are in `stores.ts`.
 */
import { hash } from 'node:crypto';
import type { Logger } from '../../observability/logger.ts';
import type { Store } from '../../store/port.ts';
import { SealedValueError, type Sealer } from '../../store/sealed.ts';

/** Compare-and-set retries before giving up: only reached if a key is rewritten in a tight loop. */
export const CAS_ATTEMPTS = 8;

/** SHA-256 of a code or token, base64url: what the store keys them by. */
export function tokenHash(value: string): string {
  return hash('sha256', value, 'base64url');
}

/**
 * The store key of each record kind. The parts in braces are Valkey hash tags, so one session's
 * keys share a cluster slot; subjects and client ids are percent-encoded so a `:` in them cannot
 * reach another key; codes and refresh tokens are keyed by their hash, never by themselves.
 */
export const storeKeys = {
  client: (clientId: string) => `client:${clientId}`,
  consent: (subject: string, clientId: string) => `consent:${encodeURIComponent(subject)}:${encodeURIComponent(clientId)}`,
  pending: (state: string) => `pending:${state}`,
  signIn: (state: string) => `signin:${state}`,
  code: (code: string) => `code:${tokenHash(code)}`,
  session: (sid: string) => `session:{${sid}}`,
  idp: (sid: string) => `idp:{${sid}}`,
  userSessions: (subject: string) => `user:${encodeURIComponent(subject)}:sessions`,
  allSessions: () => 'sessions',
  refreshToken: (token: string) => `rt:${tokenHash(token)}`,
};

/** Sealed JSON records over one storage port: what each record-kind store is built on. */
export interface SealedRecords {
  store: Store;
  /** The clock, epoch milliseconds. */
  now: () => number;
  /** `value` as JSON, sealed for the store key `key`. */
  seal(key: string, value: unknown): string;
  /**
   * Opens a value sealed for `key`; undefined when there is none or it does not open (forged,
   * copied from another key, or sealed under a key no longer configured: reported, then treated
   * as absent, because it must grant nothing and "not there" is the answer every caller already
   * handles safely).
   */
  open<T>(key: string, text: string | undefined): T | undefined;
  /** Reads and opens the record under `key`. */
  read<T>(key: string): Promise<T | undefined>;
  /** A deadline (epoch ms) turned into a TTL in ms; zero or less means "already passed, do not store". */
  ttlUntil(deadline: number): number;
}

/** Options of {@link createSealedRecords}. */
export interface SealedRecordsOptions {
  store: Store;
  sealer: Sealer;
  /** Where a value that does not open is reported (a warning with the record kind, never the key or value). Default: not reported. */
  logger?: Pick<Logger, 'warn'> | undefined;
  /** The clock, epoch milliseconds. */
  now: () => number;
}

/** The kind of record a key holds, for the log (the rest of a key name is an id or a hash). */
function kindOf(key: string): string {
  return key.slice(0, key.indexOf(':'));
}

/** Builds the sealing layer every record-kind store shares. */
export function createSealedRecords(options: SealedRecordsOptions): SealedRecords {
  const { store, sealer, logger, now } = options;
  function open<T>(key: string, text: string | undefined): T | undefined {
    if (text === undefined) return undefined;
    let plain: string;
    try {
      plain = sealer.open(key, text);
    } catch (error) {
      if (!(error instanceof SealedValueError)) throw error;
      logger?.warn({ msg: 'a stored record did not open: ignored (tampered, copied from another key, or sealed under a removed key)', record: kindOf(key), reason: error.reason });
      return undefined;
    }
    return JSON.parse(plain) as T;
  }
  return {
    store,
    now,
    seal: (key, value) => sealer.seal(key, JSON.stringify(value)),
    open,
    read: async <T>(key: string) => open<T>(key, await store.get(key)),
    ttlUntil: (deadline) => Math.ceil(deadline - now()),
  };
}
