/**
 * Size and time limits for a fetch that does not go through the guarded fetcher: the company IdP,
 * which openid-client calls with its own Fetch API requests. The IdP is configured by the operator
 * and often lives on an internal address, so the address policy of `guarded-fetch.ts` does not
 * apply to it; its answers are still bounded, so an IdP that is compromised, misconfigured or
 * impersonated on the network path cannot make the gateway buffer an unbounded body or wait
 * forever for one.
 */

/** Options of {@link createLimitedFetch}; checked when it is called. */
export interface LimitedFetchOptions {
  /** The fetch to wrap. Default the global `fetch`. */
  fetch?: typeof fetch;
  /** Largest response body accepted, in bytes. */
  maxBytes: number;
  /** Time limit of the whole request, the body read included, in milliseconds. */
  timeoutMs: number;
}

/** Thrown (as the fetch's rejection) when a body is larger than `maxBytes`. */
export class ResponseTooLargeError extends Error {
  override name = 'ResponseTooLargeError';
}

/** Statuses whose responses cannot have a body (the Fetch API's "null body status"). */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/**
 * Wraps `fetch` so each response is read whole, within `maxBytes` and `timeoutMs` (the caller's
 * own signal still applies), and handed on as a new `Response` holding the bytes read.
 * @throws TypeError for a non-positive limit.
 */
export function createLimitedFetch(options: LimitedFetchOptions): (url: string | URL, init?: RequestInit) => Promise<Response> {
  const { maxBytes, timeoutMs } = options;
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new TypeError('maxBytes must be a positive integer');
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) throw new TypeError('timeoutMs must be a positive integer (milliseconds)');
  const inner = options.fetch ?? fetch;

  return async (url, init = {}) => {
    const deadline = AbortSignal.timeout(timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, deadline]) : deadline;
    const response = await inner(url, { ...init, signal });
    const declared = Number(response.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > maxBytes) {
      await response.body?.cancel().catch(() => undefined);
      throw new ResponseTooLargeError(`the response from ${new URL(url).host} is larger than ${maxBytes} bytes`);
    }
    const body = NULL_BODY.has(response.status) ? null : await readAtMost(response, maxBytes, new URL(url).host);
    const copy = new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
    // Callers may look at the final URL (after redirects); a constructed Response has none.
    Object.defineProperty(copy, 'url', { value: response.url });
    return copy;
  };
}

async function readAtMost(response: Response, maxBytes: number, host: string): Promise<Uint8Array | null> {
  if (!response.body) return null;
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new ResponseTooLargeError(`the response from ${host} is larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}
