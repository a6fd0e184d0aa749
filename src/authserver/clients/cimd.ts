/**
 * Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP 2025-11-25):
 * a `client_id` that is an https URL names a JSON document, published by the client, that holds
 * its metadata. We fetch it through the one SSRF-guarded fetcher (no private, loopback or
 * link-local address unless dev mode allows it; size and time limits), require its `client_id`
 * to be that very URL, use its `redirect_uris`, and keep it in the store. Such a client is always
 * public: a published document cannot hold a secret.
 *
 * Only the authorization endpoint fetches (`resolve`): anyone may send any URL there, so a
 * document is refetched only once its cache time (its `Cache-Control`, within bounds) has run
 * out, and a failed fetch is remembered for a minute, so a flood of requests naming one URL
 * costs one fetch per minute, whatever the replica. The token and revocation endpoints only read
 * what an authorization request stored (`known`): a URL no authorization request fetched is an
 * unknown client there, refused without a fetch, so those endpoints cannot be used to make the
 * gateway fetch arbitrary URLs. A document stays known as long as its client's grants are used
 * (`retain`, at each token issued), else for {@link CimdResolverOptions.keepMs} after the fetch.
 *
 * Store keys (the URL hashed, so keys stay short): `cimd:doc:<sha256>` the client record with
 * its refetch time, sealed under its key name (a store writer cannot add a redirect URI), and
 * `cimd:failed:<sha256>` the reason of the last refusal.
 *
 * Fetching and checking one document, and its URL rules, are in `cimd-document.ts`.
 */
import { createHash } from 'node:crypto';
import { InvalidClient } from '../../http/errors.ts';
import type { GuardedFetch } from '../../net/guarded-fetch.ts';
import type { Store } from '../../store/port.ts';
import type { Sealer } from '../../store/sealed.ts';
import type { ClientRecord } from '../records/records.ts';
import { cacheLifetime, fetchClientDocument, urlProblem, type CacheBounds, type DocumentFetch } from './cimd-document.ts';
import type { RedirectSchemePolicy } from './redirect-uri.ts';

/** Options of {@link createCimdResolver}; checked when it is called. Durations in milliseconds. */
export interface CimdResolverOptions {
  /** The guarded fetcher; in dev mode built with `allowHttp`/`allowPrivate`. */
  fetch: GuardedFetch;
  /** Where documents and refusals are kept, shared by every replica. */
  store: Store;
  /** Seals the stored client records (their redirect URIs decide where codes go). */
  sealer: Sealer;
  /** Accept `http:` client ids too (dev mode only: loopback test clients). Default false. */
  allowHttp?: boolean;
  /** Largest document accepted, in bytes. Default 5120 (5 KiB). */
  maxBytes?: number;
  /** Time limit of one fetch. Default 5000. */
  timeoutMs?: number;
  /** Shortest time before a document is fetched again, even with `no-store` (so a flood of authorize requests cannot make us a fetch amplifier). Default 60 000. */
  minCacheMs?: number;
  /** Longest time before a document is fetched again, whatever its `max-age`. Default 86 400 000 (1 day). */
  maxCacheMs?: number;
  /** Time before a refetch when the response says nothing. Default 300 000 (5 min). */
  defaultCacheMs?: number;
  /** How long a refused document is refused without a new fetch. Default 60 000. */
  failureCacheMs?: number;
  /**
   * How long a fetched document stays known to the token and revocation endpoints when no token
   * is issued to its client (it must outlive the sign-in and the code). Default 900 000 (15 min).
   */
  keepMs?: number;
  /** How long a client that obtained tokens stays known after its last token (the session lifetime). Default 30 days. */
  retainMs?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
  /** `authServer.registration.redirectSchemes`: a document's redirect URIs obey the same lists as a registration's. */
  redirectSchemes?: RedirectSchemePolicy;
}

/** Resolves metadata-document client ids. */
export interface CimdResolver {
  /** True when `clientId` has the shape of a metadata document URL (and is therefore never a registered id). */
  isMetadataUrl(clientId: string): boolean;
  /**
   * The client the document at `clientId` describes, from the store or freshly fetched: only the
   * authorization endpoint calls this.
   * @throws InvalidClient with a description safe to show (why the document was refused).
   */
  resolve(clientId: string, signal?: AbortSignal): Promise<ClientRecord>;
  /** The client an authorization request fetched, or undefined: never fetches (the token and revocation endpoints). */
  known(clientId: string, signal?: AbortSignal): Promise<ClientRecord | undefined>;
  /** Keeps a client that was just issued tokens known for `retainMs` more (a store write at most once a day). */
  retain(client: ClientRecord, signal?: AbortSignal): Promise<void>;
}

/** What `cimd:doc:<hash>` holds. */
interface StoredDocument {
  client: ClientRecord;
  /** When the authorization endpoint fetches the document again. */
  refetchAt: number;
  /** When the record expires from the store. */
  keepUntil: number;
}

/** A retained record is rewritten at most this often. */
const RETAIN_INTERVAL_MS = 86_400_000;

/** The resolver's dependencies, defaults applied and checked. */
interface Cimd extends DocumentFetch, CacheBounds {
  store: Store;
  sealer: Sealer;
  failureCacheMs: number;
  keepMs: number;
  retainMs: number;
}

/** Creates the resolver. @throws TypeError for inconsistent cache bounds. */
export function createCimdResolver(options: CimdResolverOptions): CimdResolver {
  const cimd = cimdOf(options);
  const allowHttp = options.allowHttp ?? false;
  // Shares one fetch among concurrent requests of this process; the answer itself is in the store.
  const inFlight = new Map<string, Promise<ClientRecord>>();
  return {
    isMetadataUrl(clientId) {
      return /^https?:\/\//i.test(clientId);
    },
    async resolve(clientId, signal) {
      const problem = urlProblem(clientId, allowHttp);
      if (problem) throw new InvalidClient(`a client_id URL ${problem}`);
      // One lookup and fetch per document at a time in this process, however many requests name it.
      let pending = inFlight.get(clientId);
      if (!pending) {
        pending = resolveFresh(cimd, clientId).finally(() => inFlight.delete(clientId));
        inFlight.set(clientId, pending);
      }
      if (!signal) return pending;
      signal.throwIfAborted();
      return Promise.race([pending, new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }))]);
    },
    async known(clientId, signal) {
      if (urlProblem(clientId, allowHttp)) return undefined;
      return (await readDocument(cimd, clientId, signal))?.client;
    },
    async retain(client, signal) {
      if (client.kind !== 'cimd') return;
      const stored = await readDocument(cimd, client.clientId, signal);
      const at = cimd.now();
      if (!stored || stored.keepUntil - at > cimd.retainMs - RETAIN_INTERVAL_MS) return;
      await writeDocument(cimd, { ...stored, keepUntil: at + cimd.retainMs }, signal);
    },
  };
}

/** Checks the options and applies their defaults. */
function cimdOf(options: CimdResolverOptions): Cimd {
  const minCacheMs = options.minCacheMs ?? 60_000;
  const maxCacheMs = options.maxCacheMs ?? 86_400_000;
  const defaultCacheMs = options.defaultCacheMs ?? 300_000;
  const failureCacheMs = options.failureCacheMs ?? 60_000;
  const keepMs = options.keepMs ?? 900_000;
  const retainMs = options.retainMs ?? 30 * 86_400_000;
  if (!(minCacheMs > 0 && minCacheMs <= defaultCacheMs && defaultCacheMs <= maxCacheMs)) {
    throw new TypeError('CIMD cache bounds must satisfy 0 < minCacheMs <= defaultCacheMs <= maxCacheMs');
  }
  for (const [name, value] of Object.entries({ failureCacheMs, keepMs, retainMs })) {
    if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`${name} must be a positive integer (milliseconds)`);
  }
  return {
    store: options.store,
    sealer: options.sealer,
    fetch: options.fetch,
    maxBytes: options.maxBytes ?? 5120,
    timeoutMs: options.timeoutMs ?? 5000,
    redirectSchemes: options.redirectSchemes,
    now: options.now ?? Date.now,
    minCacheMs,
    maxCacheMs,
    defaultCacheMs,
    failureCacheMs,
    keepMs,
    retainMs,
  };
}

const hashOf = (clientId: string) => createHash('sha256').update(clientId).digest('base64url');
const docKey = (clientId: string) => `cimd:doc:${hashOf(clientId)}`;
const failedKey = (clientId: string) => `cimd:failed:${hashOf(clientId)}`;

/** The stored document of `clientId`, unless it is absent or names another URL. */
async function readDocument(cimd: Cimd, clientId: string, signal?: AbortSignal): Promise<StoredDocument | undefined> {
  const key = docKey(clientId);
  const sealed = await cimd.store.get(key, signal);
  if (sealed === undefined) return undefined;
  const stored = JSON.parse(cimd.sealer.open(key, sealed)) as StoredDocument;
  // The hash names the URL; the record must too (a copy under another URL's key opens, but names its own URL).
  return stored.client.clientId === clientId ? stored : undefined;
}

async function writeDocument(cimd: Cimd, stored: StoredDocument, signal?: AbortSignal): Promise<void> {
  const key = docKey(stored.client.clientId);
  await cimd.store.set(key, cimd.sealer.seal(key, JSON.stringify(stored)), Math.max(1, stored.keepUntil - cimd.now()), signal);
}

/** The client from the store while its cache time lasts, else fetched again; a recent refusal without a fetch. */
async function resolveFresh(cimd: Cimd, clientId: string): Promise<ClientRecord> {
  const failed = await cimd.store.get(failedKey(clientId));
  if (failed !== undefined) throw new InvalidClient(failed);
  const stored = await readDocument(cimd, clientId);
  if (stored && stored.refetchAt > cimd.now()) return stored.client;
  return fetchDocument(cimd, clientId, stored);
}

/** Fetches the document and stores what it says, or remembers why it was refused. */
async function fetchDocument(cimd: Cimd, clientId: string, previous: StoredDocument | undefined): Promise<ClientRecord> {
  let client: ClientRecord;
  let cacheControl: string | null;
  try {
    ({ client, cacheControl } = await fetchClientDocument(cimd, clientId));
  } catch (error) {
    // Remembered briefly, so the next requests naming this URL are refused without a fetch.
    if (error instanceof InvalidClient) await cimd.store.set(failedKey(clientId), error.message, cimd.failureCacheMs);
    throw error;
  }
  const at = cimd.now();
  const refetchAt = at + cacheLifetime(cacheControl, cimd);
  // A client that holds grants stays known as long as it did; a new one for the sign-in at least.
  const keepUntil = Math.max(previous?.keepUntil ?? 0, refetchAt, at + cimd.keepMs);
  await writeDocument(cimd, { client, refetchAt, keepUntil });
  return client;
}
