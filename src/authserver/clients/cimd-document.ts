/**
 * One client ID metadata document (draft-ietf-oauth-client-id-metadata-document): what makes its
 * URL acceptable as a `client_id` (draft §3), fetching and checking it through the guarded
 * fetcher, and how long it may be cached before the next fetch. `cimd.ts` keeps the results.
 */
import { InvalidClient } from '../../http/errors.ts';
import { FetchRefusedError, type GuardedFetch } from '../../net/guarded-fetch.ts';
import type { ClientRecord } from '../records/records.ts';
import { parseClientMetadata, recordedMetadata } from './client-metadata.ts';
import type { RedirectSchemePolicy } from './redirect-uri.ts';

/** Longest client id URL accepted, in characters. */
const MAX_URL_LENGTH = 2000;

/** Why `clientId` is not an acceptable metadata document URL (draft §3), or undefined. */
export function urlProblem(clientId: string, allowHttp: boolean): string | undefined {
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

/** How a document is fetched and checked. */
export interface DocumentFetch {
  fetch: GuardedFetch;
  /** Largest document accepted, bytes. */
  maxBytes: number;
  /** Time limit of one fetch, ms. */
  timeoutMs: number;
  /** The redirect-scheme lists a document's redirect URIs obey, as a registration's do. */
  redirectSchemes?: RedirectSchemePolicy | undefined;
  /** The clock, epoch ms (the client record's `createdAt`). */
  now: () => number;
}

/**
 * Fetches the document at `clientId` and turns it into a public client record, with the
 * response's `Cache-Control` for {@link cacheLifetime}.
 * @throws InvalidClient with a description safe to show (why the document was refused).
 */
export async function fetchClientDocument(deps: DocumentFetch, clientId: string): Promise<{ client: ClientRecord; cacheControl: string | null }> {
  let response;
  try {
    response = await deps.fetch(clientId, { headers: { accept: 'application/json' }, maxBytes: deps.maxBytes, timeoutMs: deps.timeoutMs });
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
    metadata = parseClientMetadata(document, { publicOnly: true, redirectSchemes: deps.redirectSchemes });
  } catch (error) {
    throw new InvalidClient(`the client metadata document is invalid: ${(error as Error).message}`, { cause: error });
  }
  const client: ClientRecord = {
    clientId,
    kind: 'cimd',
    tokenEndpointAuthMethod: 'none',
    ...recordedMetadata(metadata),
    createdAt: deps.now(),
  };
  return { client, cacheControl: response.headers.get('cache-control') };
}

/** The refetch bounds of {@link cacheLifetime}, ms. */
export interface CacheBounds {
  minCacheMs: number;
  maxCacheMs: number;
  defaultCacheMs: number;
}

/**
 * How long a fetched document is used before the next fetch, ms: its `max-age` within the
 * bounds, the shortest for `no-store`/`no-cache`, the default when it says nothing.
 */
export function cacheLifetime(header: string | null, bounds: CacheBounds): number {
  const directives = (header ?? '').toLowerCase().split(',').map((d) => d.trim());
  if (directives.includes('no-store') || directives.includes('no-cache')) return bounds.minCacheMs;
  const maxAge = directives.map((d) => /^max-age=(\d{1,10})$/.exec(d)?.[1]).find((v) => v !== undefined);
  if (maxAge === undefined) return bounds.defaultCacheMs;
  return Math.min(bounds.maxCacheMs, Math.max(bounds.minCacheMs, Number(maxAge) * 1000));
}
