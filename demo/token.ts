/**
 * An access token for a demo user without a browser, for scripts and CI
 * (`npm run demo -- --print-token alice`). It goes through the real flow, as an agent and a person
 * would, with plain HTTP standing in for the browser: dynamic client registration, authorize with
 * PKCE and `resource`, the development IdP's login form (the user's generated password), mcpgate's
 * consent page (approved), the code back at a loopback redirect URI, and the token request.
 * Nothing is seeded in the store and no step is skipped; only the development IdP makes it possible
 * (a company IdP has no password for a script to type).
 */
import { createHash, randomBytes } from 'node:crypto';

/** What {@link obtainDemoToken} needs. */
export interface DemoTokenRequest {
  /** The gateway's public URL (its issuer). */
  issuer: string;
  /** The protected resource the token is for: `<issuer>/<name>/mcp`. */
  resource: string;
  /** A development-IdP user and its password. */
  user: { login: string; password: string };
}

/** Our tokens, as the token endpoint returned them. */
export interface DemoTokens {
  accessToken: string;
  refreshToken?: string;
  /** The client registered for the script (public client, `token_endpoint_auth_method: none`). */
  clientId: string;
  /** Seconds. */
  expiresIn: number;
}

/** Where the code is sent; nothing listens there: the script reads the code from the redirect itself. */
const REDIRECT_URI = 'http://127.0.0.1:9/callback';
const MAX_STEPS = 20;

/** Logs `user` in for `resource` through the whole flow (see the module comment); throws with the step that failed. */
export async function obtainDemoToken(request: DemoTokenRequest): Promise<DemoTokens> {
  const { issuer, resource, user } = request;
  const client = await json(
    await fetch(`${issuer}/oauth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: `demo token script (${user.login})`,
        redirect_uris: [REDIRECT_URI],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      }),
    }),
    'registration',
  );
  const clientId = String(client['client_id']);
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(16).toString('base64url');
  const authorize = new URL(`${issuer}/oauth/authorize`);
  authorize.search = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: REDIRECT_URI,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    resource,
    state,
  }).toString();

  const browser = createBrowser();
  let response = await browser.get(authorize.href);
  for (let step = 0; step < MAX_STEPS; step++) {
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location) {
      const next = new URL(location, response.url);
      if (next.href.startsWith(`${REDIRECT_URI}?`)) return redeem(next, { issuer, resource, clientId, verifier, state });
      response = await browser.get(next.href);
      continue;
    }
    const html = await response.text();
    const form = firstForm(html, response.url);
    if (response.status !== 200 || form === undefined) {
      throw new Error(`the login stopped at ${new URL(response.url).pathname} (HTTP ${response.status}): ${textOf(html).slice(0, 200)}`);
    }
    if ('password' in form.fields) {
      form.fields['login'] = user.login;
      form.fields['password'] = user.password;
    } else if (form.buttons.some((b) => b.name === 'decision' && b.value === 'approve')) {
      form.fields['decision'] = 'approve';
    } else {
      throw new Error(`unexpected form at ${new URL(response.url).pathname}`);
    }
    response = await browser.post(form.action, form.fields);
  }
  throw new Error(`the login did not finish within ${MAX_STEPS} pages`);
}

async function redeem(callback: URL, flow: { issuer: string; resource: string; clientId: string; verifier: string; state: string }): Promise<DemoTokens> {
  const error = callback.searchParams.get('error');
  if (error) throw new Error(`authorization refused: ${error} ${callback.searchParams.get('error_description') ?? ''}`.trim());
  if (callback.searchParams.get('state') !== flow.state) throw new Error('authorization response with the wrong state');
  const tokens = await json(
    await fetch(`${flow.issuer}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: callback.searchParams.get('code') ?? '',
        redirect_uri: REDIRECT_URI,
        client_id: flow.clientId,
        code_verifier: flow.verifier,
        resource: flow.resource,
      }),
    }),
    'token request',
  );
  return {
    accessToken: String(tokens['access_token']),
    ...(typeof tokens['refresh_token'] === 'string' ? { refreshToken: tokens['refresh_token'] } : {}),
    clientId: flow.clientId,
    expiresIn: Number(tokens['expires_in']),
  };
}

async function json(response: Response, what: string): Promise<Record<string, unknown>> {
  const text = await response.text();
  if (!response.ok) throw new Error(`${what} failed: HTTP ${response.status} ${text.slice(0, 300)}`);
  return JSON.parse(text) as Record<string, unknown>;
}

/** Plain HTTP with a cookie jar per origin and redirects handled by the caller: enough of a browser for these pages. */
function createBrowser() {
  const jar = new Map<string, Map<string, string>>();
  const send = async (url: string, init: RequestInit): Promise<Response> => {
    const origin = new URL(url).origin;
    const cookies = jar.get(origin);
    const headers = new Headers(init.headers);
    if (cookies && cookies.size > 0) headers.set('cookie', [...cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';');
      const at = pair.indexOf('=');
      if (at <= 0) continue;
      const name = pair.slice(0, at).trim();
      const expired = attributes.some((a) => /^\s*max-age\s*=\s*0\s*$/i.test(a));
      const store = jar.get(origin) ?? new Map<string, string>();
      if (expired) store.delete(name);
      else store.set(name, pair.slice(at + 1).trim());
      jar.set(origin, store);
    }
    Object.defineProperty(response, 'url', { value: url });
    return response;
  };
  return {
    get: (url: string) => send(url, { method: 'GET', headers: { accept: 'text/html' } }),
    post: (url: string, fields: Record<string, string>) =>
      send(url, {
        method: 'POST',
        headers: { accept: 'text/html', 'content-type': 'application/x-www-form-urlencoded', origin: new URL(url).origin },
        body: new URLSearchParams(fields),
      }),
  };
}

interface Form {
  action: string;
  fields: Record<string, string>;
  buttons: Array<{ name: string; value: string }>;
}

/** The first POST form of a page: its action, its inputs with their values, and its named buttons. */
function firstForm(html: string, base: string): Form | undefined {
  const match = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!match) return undefined;
  const action = attribute(match[1]!, 'action') ?? base;
  const fields: Record<string, string> = {};
  for (const input of match[2]!.matchAll(/<input\b([^>]*)>/gi)) {
    const name = attribute(input[1]!, 'name');
    if (name !== undefined) fields[name] = attribute(input[1]!, 'value') ?? '';
  }
  const buttons = [...match[2]!.matchAll(/<button\b([^>]*)>/gi)].flatMap((b) => {
    const name = attribute(b[1]!, 'name');
    return name === undefined ? [] : [{ name, value: attribute(b[1]!, 'value') ?? '' }];
  });
  return { action: new URL(action, base).href, fields, buttons };
}

function attribute(tag: string, name: string): string | undefined {
  const match = new RegExp(`\\b${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`, 'i').exec(tag);
  const raw = match?.[1] ?? match?.[2];
  return raw === undefined ? undefined : decodeEntities(raw);
}

function decodeEntities(text: string): string {
  return text.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (_, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'", '#x27': "'" })[e] ?? _);
}

function textOf(html: string): string {
  return html.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim();
}
