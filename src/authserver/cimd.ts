/**
 * Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP 2025-11-25):
 * a `client_id` that is an https URL names a JSON document, published by the client,
 * that holds its metadata. We fetch it through the one SSRF-guarded fetcher (no private,
 * loopback or link-local address unless dev mode allows it; size and time limits), require its
 * `client_id` to be that very URL, use its `redirect_uris`, and cache it as its `Cache-Control`
 * says, within bounds. Such a client is always public: a published document cannot hold a secret.
 */
import { InvalidClient } from '../http/errors.ts';
import { FetchRefusedError, type GuardedFetch } from '../net/guarded-fetch.ts';
import { parseClientMetadata } from './client-metadata.ts';
import type { ClientRecord } from './records.ts';

/** Options of {@link createCimdResolver}; checked when it is called. Durations in milliseconds. */
export interface CimdResolverOptions {
  /** The guarded fetcher; in dev mode built with `allowHttp`/`allowPrivate`. */
  fetch: GuardedFetch;
  /** Accept `http:` client ids too (dev mode only: loopback test clients). Default false. */
  allowHttp?: boolean;
  /** Largest document accepted, in bytes. Default 5120 (5 KiB). */
  maxBytes?: number;
  /** Time limit of one fetch. Default 5000. */
  timeoutMs?: number;
  /** Shortest time a document is cached, even with `no-store` (so a flood of authorize requests cannot make us a fetch amplifier). Default 60 000. */
  minCacheMs?: number;
  /** Longest time a document is cached, whatever its `max-age`. Default 86 400 000 (1 day). */
  maxCacheMs?: number;
  /** Cache time when the response says nothing. Default 300 000 (5 min). */
  defaultCacheMs?: number;
  /** Documents cached at most; the oldest goes first. Default 1000. */
  maxEntries?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
}

/** Resolves metadata-document client ids. */
export interface CimdResolver {
  /** True when `clientId` has the shape of a metadata document URL (and is therefore never a registered id). */
  isMetadataUrl(clientId: string): boolean;
  /**
   * The client the document at `clientId` describes, from the cache or freshly fetched.
   * @throws InvalidClient with a description safe to show (why the document was refused).
   */
  resolve(clientId: string, signal?: AbortSignal): Promise<ClientRecord>;
}

interface Cached {
  client: ClientRecord;
  expiresAt: number;
}

/** Longest client id URL accepted, in characters. */
const MAX_URL_LENGTH = 2000;

/** Creates the resolver. @throws TypeError for inconsistent cache bounds. */
export function createCimdResolver(options: CimdResolverOptions): CimdResolver {
  const maxBytes = options.maxBytes ?? 5120;
  const timeoutMs = options.timeoutMs ?? 5000;
  const minCacheMs = options.minCacheMs ?? 60_000;
  const maxCacheMs = options.maxCacheMs ?? 86_400_000;
  const defaultCacheMs = options.defaultCacheMs ?? 300_000;
  const maxEntries = options.maxEntries ?? 1000;
  const now = options.now ?? Date.now;
  if (!(minCacheMs >= 0 && minCacheMs <= defaultCacheMs && defaultCacheMs <= maxCacheMs)) {
    throw new TypeError('CIMD cache bounds must satisfy minCacheMs <= defaultCacheMs <= maxCacheMs');
  }
  if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new TypeError('maxEntries must be a positive integer');
  const cache = new Map<string, Cached>();
  const inFlight = new Map<string, Promise<ClientRecord>>();

  function isMetadataUrl(clientId: string): boolean {
    return /^https?:\/\//i.test(clientId);
  }

  async function fetchDocument(clientId: string, signal?: AbortSignal): Promise<ClientRecord> {
    let response;
    try {
      response = await options.fetch(clientId, { headers: { accept: 'application/json' }, maxBytes, timeoutMs, signal });
    } catch (error) {
      if (error instanceof FetchRefusedError) {
        throw new InvalidClient(`the client metadata document could not be fetched (${error.reason})`, { cause: error });
      }
      throw error;
    }
    if (response.status !== 200) throw new InvalidClient(`the client metadata document answered HTTP ${response.status}`);
    let document: unknown;
    try {
      document = response.json();
    } catch (error) {
      throw new InvalidClient('the client metadata document is not JSON', { cause: error });
    }
    if (typeof document !== 'object' || document === null || (document as { client_id?: unknown }).client_id !== clientId) {
      throw new InvalidClient('the client metadata document must name its own URL as client_id');
    }
    let metadata;
    try {
      metadata = parseClientMetadata(document, { publicOnly: true });
    } catch (error) {
      throw new InvalidClient(`the client metadata document is invalid: ${(error as Error).message}`, { cause: error });
    }
    const client: ClientRecord = {
      clientId,
      kind: 'cimd',
      tokenEndpointAuthMethod: 'none',
      redirectUris: metadata.redirectUris,
      grantTypes: metadata.grantTypes,
      clientName: metadata.clientName,
      clientUri: metadata.clientUri,
      logoUri: metadata.logoUri,
      scope: metadata.scope,
      createdAt: now(),
    };
    remember(clientId, client, cacheLifetime(response.headers.get('cache-control')));
    return client;
  }

  function cacheLifetime(header: string | null): number {
    const directives = (header ?? '').toLowerCase().split(',').map((d) => d.trim());
    if (directives.includes('no-store') || directives.includes('no-cache')) return minCacheMs;
    const maxAge = directives.map((d) => /^max-age=(\d{1,10})$/.exec(d)?.[1]).find((v) => v !== undefined);
    if (maxAge === undefined) return defaultCacheMs;
    return Math.min(maxCacheMs, Math.max(minCacheMs, Number(maxAge) * 1000));
  }

  function remember(clientId: string, client: ClientRecord, lifetimeMs: number): void {
    cache.delete(clientId);
    if (cache.size >= maxEntries) cache.delete(cache.keys().next().value!);
    cache.set(clientId, { client, expiresAt: now() + lifetimeMs });
  }

  return {
    isMetadataUrl,
    async resolve(clientId, signal) {
      const problem = urlProblem(clientId, options.allowHttp ?? false);
      if (problem) throw new InvalidClient(`a client_id URL ${problem}`);
      const cached = cache.get(clientId);
      if (cached && cached.expiresAt > now()) return cached.client;
      // One fetch per document at a time, however many authorize requests name it.
      let pending = inFlight.get(clientId);
      if (!pending) {
        pending = fetchDocument(clientId).finally(() => inFlight.delete(clientId));
        inFlight.set(clientId, pending);
      }
      if (!signal) return pending;
      signal.throwIfAborted();
      return Promise.race([pending, new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }))]);
    },
  };
}

/** Why `clientId` is not an acceptable metadata document URL (draft §3), or undefined. */
function urlProblem(clientId: string, allowHttp: boolean): string | undefined {
  if (clientId.length > MAX_URL_LENGTH) return `must be at most ${MAX_URL_LENGTH} characters`;
  if (!URL.canParse(clientId)) return 'must be an absolute URL';
  const url = new URL(clientId);
  if (url.protocol !== 'https:' && !(allowHttp && url.protocol === 'http:')) return 'must use https';
  if (clientId.includes('#')) return 'must not contain a fragment';
  if (url.username || url.password) return 'must not contain credentials';
  if (url.pathname === '/' || url.pathname === '') return 'must contain a path';
  // The parser resolves dot segments; the draft forbids them in the identifier itself.
  const path = clientId.slice(url.origin.length).split('?')[0]!.replace(/%2e/gi, '.');
  if (/(^|\/)\.\.?(\/|$)/.test(path)) return 'must not contain "." or ".." path segments';
  return undefined;
}
