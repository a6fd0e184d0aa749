/**
 * A small scripted browser for the OAuth legs: plain HTTP with manual redirects and a cookie jar,
 * so every hop (our start URL, the upstream's authorization server, its login and consent forms,
 * our callback) is a real request. `hosts` maps a public origin to where it actually listens
 * (e.g. `https://gw.test` → `http://127.0.0.1:1234`), as an ingress would.
 */
import { request } from 'node:http';

/** One response, read whole. */
export interface Page {
  status: number;
  /** The URL that answered (the public one, before `hosts` mapping). */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

interface Cookie {
  value: string;
  path: string;
}

/** See the module comment. */
export interface Browser {
  /** GET, following redirects until a non-redirect answer or `stopAt` matches a URL about to be requested. */
  open(url: string, options?: { stopAt?: (url: URL) => boolean }): Promise<Page>;
  /** POSTs a form, then follows redirects as `open` does. */
  submit(url: string, fields: Record<string, string>, options?: { stopAt?: (url: URL) => boolean }): Promise<Page>;
  /** Sets a cookie for an origin, as if that origin had set it. */
  setCookie(origin: string, name: string, value: string): void;
  /** Every URL requested, in order. */
  readonly visited: string[];
}

/** Creates a browser with an empty cookie jar. */
export function createBrowser(options: { hosts?: Record<string, string> } = {}): Browser {
  const jar = new Map<string, Map<string, Cookie>>();
  const visited: string[] = [];

  function cookiesFor(url: URL): string | undefined {
    const cookies = jar.get(url.host);
    if (!cookies) return undefined;
    const sent = [...cookies.entries()].filter(([, c]) => url.pathname.startsWith(c.path)).map(([name, c]) => `${name}=${c.value}`);
    return sent.length > 0 ? sent.join('; ') : undefined;
  }

  function remember(url: URL, setCookie: string | string[] | undefined): void {
    for (const line of Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : []) {
      const [pair = '', ...attributes] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const attr = (key: string) => attributes.map((a) => a.trim()).find((a) => a.toLowerCase().startsWith(`${key}=`))?.slice(key.length + 1);
      const cookies = jar.get(url.host) ?? new Map<string, Cookie>();
      jar.set(url.host, cookies);
      const expires = attr('expires');
      if (attr('max-age') === '0' || (expires && Date.parse(expires) < Date.now())) cookies.delete(name);
      else cookies.set(name, { value, path: attr('path') ?? '/' });
    }
  }

  function actual(url: URL): URL {
    const target = options.hosts?.[url.origin];
    return target ? new URL(url.pathname + url.search, target) : url;
  }

  function fetchOnce(url: URL, method: string, body?: string): Promise<Page> {
    visited.push(url.href);
    const headers: Record<string, string> = { accept: 'text/html' };
    const cookie = cookiesFor(url);
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    return new Promise((resolve, reject) => {
      const req = request(actual(url), { method, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          remember(url, res.headers['set-cookie']);
          resolve({ status: res.statusCode ?? 0, url: url.href, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  async function follow(first: Page, stopAt?: (url: URL) => boolean): Promise<Page> {
    let page = first;
    for (let hop = 0; hop < 20; hop++) {
      // A page that moves on at once (`<meta http-equiv="refresh" content="0;url=…">`) is followed as a browser would.
      const refresh = page.status === 200 ? /<meta http-equiv="refresh" content="0;url=([^"]+)">/.exec(page.body)?.[1] : undefined;
      if (refresh) {
        const next = new URL(refresh.replace(/&amp;/g, '&'), page.url);
        if (stopAt?.(next)) return page;
        page = await fetchOnce(next, 'GET');
        continue;
      }
      const location = page.headers.location;
      if (page.status < 300 || page.status >= 400 || typeof location !== 'string') return page;
      const next = new URL(location, page.url);
      if (stopAt?.(next)) return page;
      page = await fetchOnce(next, 'GET');
    }
    throw new Error('too many redirects');
  }

  return {
    visited,
    async open(url, o = {}) {
      const first = new URL(url);
      if (o.stopAt?.(first)) throw new Error('stopAt matches the first URL');
      return follow(await fetchOnce(first, 'GET'), o.stopAt);
    },
    async submit(url, fields, o = {}) {
      return follow(await fetchOnce(new URL(url), 'POST', new URLSearchParams(fields).toString()), o.stopAt);
    },
    setCookie(origin, name, value) {
      const host = new URL(origin).host;
      const cookies = jar.get(host) ?? new Map<string, Cookie>();
      jar.set(host, cookies);
      cookies.set(name, { value, path: '/' });
    },
  };
}

/** The `action` of the first form in a page whose action matches `pattern`, resolved against the page URL. */
export function formAction(page: Page, pattern: RegExp): string {
  for (const match of page.body.matchAll(/<form[^>]*action="([^"]+)"/g)) {
    const action = match[1]!.replace(/&amp;/g, '&');
    if (pattern.test(action)) return new URL(action, page.url).href;
  }
  throw new Error(`no form matching ${pattern} on ${page.url} (status ${page.status}): ${page.body.slice(0, 300)}`);
}

/** True for mcpgate's "Connect X to your mcpgate account?" page (a form with a CSRF token). */
export function isConnectConfirmation(page: Page): boolean {
  return page.status === 200 && /<form method="post" action="[^"]*\/(?:oauth\/upstream\/start|connect\/[^"/]+)"/.test(page.body) && /name="csrf"/.test(page.body);
}

/** Clicks "Connect" on mcpgate's confirmation page: posts its form with its hidden fields, as a browser would. */
export async function confirmConnect(browser: Browser, page: Page, options: { stopAt?: (url: URL) => boolean } = {}): Promise<Page> {
  if (!isConnectConfirmation(page)) throw new Error(`not the connect confirmation: ${page.url} (status ${page.status}): ${page.body.slice(0, 300)}`);
  const fields: Record<string, string> = {};
  for (const match of page.body.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    fields[match[1]!] = match[2]!.replace(/&amp;/g, '&').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>');
  }
  fields.decision = 'connect';
  return browser.submit(formAction(page, /\/(?:oauth\/upstream\/start|connect\/[^/]+)$/), fields, options);
}
