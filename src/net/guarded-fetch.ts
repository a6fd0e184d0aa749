/**
 * The one SSRF-guarded HTTP client for every server-side fetch (CIMD, upstream discovery,
 * DCR, token endpoints).
 *
 * The address check happens inside the socket's `lookup`, so the address that was checked is
 * the address that is connected to: a name that resolves to a public address for the check and
 * to 169.254.169.254 for the connection (DNS rebinding) cannot slip through. IP literals never
 * reach `lookup`, so they are checked before the request. Redirects are followed by hand, and
 * every hop goes through the same checks.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP, type LookupFunction } from 'node:net';
import { Agent, request } from 'undici';
import { hostAllowList, isAddressAllowed, normalizeHost } from './address-policy.ts';

/** Why a fetch was refused or failed. Safe to log and to show: never contains a URL's path, query or credentials. */
export type FetchRefusedReason =
  | 'bad_url'
  | 'https_required'
  | 'ssrf_blocked'
  | 'dns_failed'
  | 'network_error'
  | 'timeout'
  | 'too_large'
  | 'too_many_redirects'
  | 'invalid_json';

/** Thrown by a guarded fetch; `reason` is stable, `message` names at most the host. */
export class FetchRefusedError extends Error {
  override name = 'FetchRefusedError';
  readonly reason: FetchRefusedReason;
  constructor(reason: FetchRefusedReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

/** One resolved address, as `dns.lookup({ all: true })` returns it. */
export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Options of {@link createGuardedFetch}; validated when it is called. */
export interface GuardedFetchOptions {
  /** Allow `http:` URLs (dev mode only). Default false: https only. */
  allowHttp?: boolean;
  /** Allow loopback, private, link-local and CGNAT addresses for every host (dev mode only). Default false. */
  allowPrivate?: boolean;
  /** Host names (or IP literals) that may resolve to internal addresses, e.g. an in-cluster IdP. Case-insensitive. */
  allowHosts?: readonly string[];
  /** Largest response body accepted, in bytes. Default 262144 (256 KiB). */
  maxBytes?: number;
  /** Time limit for the whole fetch, redirects and body included, in milliseconds. Default 5000. */
  timeoutMs?: number;
  /** Redirects followed for GET and HEAD. Default 3. */
  maxRedirects?: number;
  /** `User-Agent` sent when the caller sets none. Default `mcpgate`. */
  userAgent?: string;
  /** Name resolution; default `dns.lookup` with all addresses. Tests substitute a fixed table. */
  resolve?: (hostname: string) => Promise<ResolvedAddress[]>;
}

/** One request. Redirects are followed only for GET and HEAD: a POST's body (a code, a secret) is never replayed elsewhere. */
export interface GuardedRequest {
  /** Default GET. */
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** Overrides the fetcher's `maxBytes` for this request. */
  maxBytes?: number;
  /** Overrides the fetcher's `timeoutMs` for this request. */
  timeoutMs?: number;
  /** The caller's cancellation; its reason is rethrown as is. */
  signal?: AbortSignal;
}

/** A fully read response. */
export interface GuardedResponse {
  status: number;
  headers: Headers;
  /** The final URL, after redirects. */
  url: string;
  body: Buffer;
  /** The body as UTF-8. */
  text(): string;
  /** The body parsed as JSON; throws `FetchRefusedError('invalid_json')`. The type is not checked. */
  json<T = unknown>(): T;
}

/** A guarded fetcher; `close()` releases its pooled connections. */
export interface GuardedFetch {
  (url: string | URL, init?: GuardedRequest): Promise<GuardedResponse>;
  close(): Promise<void>;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * Creates the guarded fetcher ("https only outside dev mode; private, loopback and
 * link-local addresses refused unless allowed per host; redirects re-checked; size and time limits").
 * @throws TypeError for invalid options.
 */
export function createGuardedFetch(options: GuardedFetchOptions = {}): GuardedFetch {
  const policy = resolvePolicy(options);
  const agent = new Agent({ connect: { lookup: guardedLookup(policy) }, headersTimeout: policy.timeoutMs, bodyTimeout: policy.timeoutMs });
  const guarded = (input: string | URL, init?: GuardedRequest) => guardedFetch(policy, agent, input, init);
  return Object.assign(guarded, { close: () => agent.close() });
}

/** The checked options of one fetcher, with their defaults. */
interface FetchPolicy {
  allowHttp: boolean;
  allowPrivate: boolean;
  /** Whether a host is on the allow list ({@link hostAllowList}). */
  isListed: (host: string) => boolean;
  maxBytes: number;
  timeoutMs: number;
  maxRedirects: number;
  userAgent: string;
  resolve: (hostname: string) => Promise<ResolvedAddress[]>;
}

function resolvePolicy(options: GuardedFetchOptions): FetchPolicy {
  return {
    allowHttp: options.allowHttp ?? false,
    allowPrivate: options.allowPrivate ?? false,
    isListed: hostAllowList(options.allowHosts ?? []),
    maxBytes: positiveInt(options.maxBytes ?? 256 * 1024, 'maxBytes'),
    timeoutMs: positiveInt(options.timeoutMs ?? 5000, 'timeoutMs'),
    maxRedirects: nonNegativeInt(options.maxRedirects ?? 3, 'maxRedirects'),
    userAgent: options.userAgent ?? 'mcpgate',
    resolve: options.resolve ?? ((hostname: string) => dnsLookup(hostname, { all: true, order: 'verbatim' })),
  };
}

function checkAddresses(policy: FetchPolicy, host: string, addresses: readonly ResolvedAddress[]): void {
  if (addresses.length === 0) throw new FetchRefusedError('dns_failed', `no address for host ${host}`);
  const allowed = policy.allowPrivate || policy.isListed(host);
  // Refuse the host if ANY address is internal: otherwise the socket's happy-eyeballs
  // fallback could still land on the internal one.
  if (!addresses.every((a) => isAddressAllowed(a.address, allowed))) {
    throw new FetchRefusedError('ssrf_blocked', `host ${host} resolves to an address that is not allowed`);
  }
}

/** The socket's `lookup`: resolves, then checks what it is about to connect to (see the module comment). */
function guardedLookup(policy: FetchPolicy): LookupFunction {
  return (hostname, lookupOptions, callback) => {
    policy.resolve(hostname).then(
      (addresses) => {
        checkAddresses(policy, hostname, addresses);
        if (lookupOptions.all) callback(null, addresses);
        else callback(null, addresses[0]!.address, addresses[0]!.family);
      },
    ).catch((err: unknown) => {
      const error = err instanceof FetchRefusedError ? err : new FetchRefusedError('dns_failed', `cannot resolve host ${hostname}`, { cause: err });
      callback(error as NodeJS.ErrnoException, '', 0);
    });
  };
}

function checkUrl(policy: FetchPolicy, input: string | URL): URL {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new FetchRefusedError('bad_url', 'not an absolute URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new FetchRefusedError('bad_url', `scheme ${url.protocol} not allowed`);
  if (url.protocol === 'http:' && !policy.allowHttp) throw new FetchRefusedError('https_required', `https required for host ${url.hostname}`);
  // Credentials in a URL would be sent as Basic auth by some clients and logged by others.
  if (url.username || url.password) throw new FetchRefusedError('bad_url', 'credentials in URL not allowed');
  const host = normalizeHost(url.hostname);
  if (isIP(host) !== 0) checkAddresses(policy, host, [{ address: host, family: isIP(host) }]);
  return url;
}

/** One request through `agent`, following GET and HEAD redirects by hand, each hop checked again. */
async function guardedFetch(policy: FetchPolicy, agent: Agent, input: string | URL, init: GuardedRequest = {}): Promise<GuardedResponse> {
  const { maxRedirects } = policy;
  const limit = positiveInt(init.maxBytes ?? policy.maxBytes, 'maxBytes');
  const timer = AbortSignal.timeout(positiveInt(init.timeoutMs ?? policy.timeoutMs, 'timeoutMs'));
  const signal = init.signal ? AbortSignal.any([init.signal, timer]) : timer;
  const method = (init.method ?? 'GET').toUpperCase();
  const follow = method === 'GET' || method === 'HEAD';
  let headers: Record<string, string> = { 'user-agent': policy.userAgent, ...lowerKeys(init.headers ?? {}) };
  let url = checkUrl(policy, input);

  try {
    for (let hop = 0; ; hop++) {
      const res = await request(url, {
        dispatcher: agent,
        method: method as 'GET',
        headers,
        body: init.body,
        signal,
      });
      const location = res.headers.location;
      if (follow && REDIRECTS.has(res.statusCode) && typeof location === 'string') {
        await res.body.dump().catch(() => {});
        if (hop >= maxRedirects) throw new FetchRefusedError('too_many_redirects', `more than ${maxRedirects} redirects`);
        const next = checkUrl(policy, new URL(location, url));
        // Credentials meant for one origin never follow a redirect to another.
        if (next.origin !== url.origin) headers = withoutCredentials(headers);
        url = next;
        continue;
      }
      const body = await readLimited(res.body, res.headers['content-length'], limit, url.hostname);
      return toResponse(res.statusCode, res.headers, url, body);
    }
  } catch (err) {
    throw mapError(err, { timedOut: timer.aborted, callerAborted: init.signal?.aborted ?? false, callerReason: init.signal?.reason, url });
  }
}

async function readLimited(
  body: AsyncIterable<Buffer> & { destroy(err?: Error): unknown },
  contentLength: string | string[] | undefined,
  limit: number,
  host: string,
): Promise<Buffer> {
  const tooLarge = () => new FetchRefusedError('too_large', `response from ${host} exceeds ${limit} bytes`);
  // Refuse early when the server announces a body that is too large; still count while streaming,
  // because the header can lie and chunked responses have none.
  if (typeof contentLength === 'string' && Number(contentLength) > limit) {
    body.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) {
      body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

function toResponse(status: number, raw: Record<string, string | string[] | undefined>, url: URL, body: Buffer): GuardedResponse {
  const headers = new Headers();
  for (const [name, value] of Object.entries(raw)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
  }
  return {
    status,
    headers,
    url: url.href,
    body,
    text: () => body.toString('utf8'),
    json<T>(): T {
      try {
        return JSON.parse(body.toString('utf8')) as T;
      } catch (err) {
        throw new FetchRefusedError('invalid_json', `response from ${url.hostname} is not JSON`, { cause: err });
      }
    },
  };
}

function mapError(
  err: unknown,
  ctx: { timedOut: boolean; callerAborted: boolean; callerReason: unknown; url: URL },
): unknown {
  if (err instanceof FetchRefusedError) return err;
  // The caller's own cancellation is theirs to recognise; ours becomes a timeout.
  if (ctx.callerAborted && !ctx.timedOut) return ctx.callerReason;
  const code = (err as { code?: string } | null)?.code;
  if (ctx.timedOut || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new FetchRefusedError('timeout', `request to ${ctx.url.hostname} timed out`, { cause: err });
  }
  return new FetchRefusedError('network_error', `request to ${ctx.url.hostname} failed`, { cause: err });
}

function lowerKeys(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}

function withoutCredentials(headers: Record<string, string>): Record<string, string> {
  const { authorization: _a, cookie: _c, 'proxy-authorization': _p, ...rest } = headers;
  return rest;
}

function positiveInt(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`${name} must be a positive integer`);
  return value;
}

function nonNegativeInt(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new TypeError(`${name} must be a non-negative integer`);
  return value;
}
