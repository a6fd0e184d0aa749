/**
 * A gateway with login for the authorization-server tests: `createApp` with an `idp:` section,
 * a signing key from a (virtual) file, a memory store on a fake clock that the test shares, and
 * helpers that stand in for the authorize leg (a session, IdP tokens and a code created through
 * the domain stores, exactly as `/oauth/callback` leaves them).
 */
import { randomBytes } from 'node:crypto';
import { createApp, type App } from '../../src/app.ts';
import { generateSigningKeyPem, generateStoreKey } from '../../src/authserver/tokens/keys.ts';
import type { AuthStores, ClientRecord, IdpTokens } from '../../src/authserver/records/records.ts';
import { createAuthStores, tokenHash } from '../../src/authserver/records/stores.ts';
import { pkceChallenge, randomToken } from '../../src/authserver/tokens/mint.ts';
import { parseConfig } from '../../src/config/load.ts';
import type { IdpClient } from '../../src/idp/types.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/port.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createValkeyStore } from '../../src/store/valkey.ts';
import { freePort } from '../support/gateway.ts';
import { captureLogs, type LogCapture } from '../support/logs.ts';

/** Options of {@link startAuthGateway}. */
export interface AuthGatewayOptions {
  upstreams: Array<{ name: string; url: string | URL; auth?: Record<string, unknown> }>;
  /** The IdP (or a factory given the gateway's fake clock); default one that refuses every call. */
  idpClient?: IdpClient | ((now: () => number) => IdpClient);
  /** Path of the public URL, e.g. `/gw` (default none). */
  publicPath?: string;
  /** Extra `authServer:` keys. */
  authServer?: Record<string, unknown>;
  /** Extra `server:` keys. */
  server?: Record<string, unknown>;
  /** Signing key PEMs (default one fresh ES256 key). */
  signingKeys?: string[];
  /** Use `storage.kind: valkey` at this URL (the gateway builds its own store) instead of an injected memory store. */
  valkeyUrl?: string;
  /** Wraps the injected memory store as the app sees it (e.g. to record the calls a request makes). */
  wrapStore?: (store: Store) => Store;
}

/** A running gateway with login, and direct access to its stores and clock. */
export interface AuthGateway {
  app: App;
  /** Where it listens: `http://127.0.0.1:<port>`. */
  url: URL;
  /** The issuer: the public URL without a trailing slash. */
  issuer: string;
  /** The resource URL of an upstream. */
  resource(name: string): string;
  store: Store;
  /** Domain stores over the gateway's own store, with its sealing key. */
  stores: AuthStores;
  now(): number;
  /** Moves the shared fake clock. */
  advance(ms: number): void;
  logs: LogCapture;
  close(): Promise<void>;
}

export const refusingIdp: IdpClient = {
  startLogin: () => Promise.reject(new Error('no IdP in this test')),
  finishLogin: () => Promise.reject(new Error('no IdP in this test')),
  refresh: () => Promise.reject(new Error('no IdP in this test')),
};

/** Starts a gateway with login on a free loopback port. */
export async function startAuthGateway(options: AuthGatewayOptions): Promise<AuthGateway> {
  const port = await freePort();
  const keyPrefix = `gw${randomBytes(4).toString('hex')}:`;
  const publicUrl = `http://127.0.0.1:${port}${options.publicPath ?? ''}`;
  const storeKey = generateStoreKey();
  const pems = options.signingKeys ?? [generateSigningKeyPem()];
  const files = Object.fromEntries(pems.map((pem, i) => [`/keys/${i}.pem`, pem]));
  const raw = {
    server: { listen: `127.0.0.1:${port}`, publicUrl, devMode: true, drainTimeout: '2s', ...options.server },
    idp: { issuer: 'http://127.0.0.1:9/unused', clientId: 'mcpgate' },
    authServer: { signingKeys: pems.map((_, i) => `file:/keys/${i}.pem`), ...options.authServer },
    storage: options.valkeyUrl
      ? { kind: 'valkey', valkey: { url: options.valkeyUrl, keyPrefix }, encryptionKeys: [{ id: 'k1', key: 'env:STORE_KEY' }] }
      : { kind: 'memory', encryptionKeys: [{ id: 'k1', key: 'env:STORE_KEY' }] },
    upstreams: options.upstreams.map((u) => ({ name: u.name, url: String(u.url), auth: u.auth ?? { mode: 'none' } })),
  };
  const config = parseConfig(JSON.stringify(raw), 'test-config', {
    env: { STORE_KEY: storeKey },
    readFile: (path) => {
      const text = files[path];
      if (text === undefined) throw Object.assign(new Error(`no such file ${path}`), { code: 'ENOENT' });
      return text;
    },
  });
  let t = Date.now();
  const now = () => t;
  // With valkey the test seeds through its own connection to the same keys.
  const store = options.valkeyUrl ? createValkeyStore({ url: options.valkeyUrl, keyPrefix }) : createMemoryStore({ now });
  const sealer = createSealer({ keys: [{ id: 'k1', key: Buffer.from(storeKey, 'base64') }] });
  const logs = captureLogs();
  const idpClient = typeof options.idpClient === 'function' ? options.idpClient(now) : (options.idpClient ?? refusingIdp);
  const app = createApp(config, { logDestination: logs.destination, store: options.valkeyUrl ? undefined : (options.wrapStore?.(store) ?? store), idpClient, now });
  const url = await app.listen({ host: '127.0.0.1', port });
  const issuer = publicUrl;
  return {
    app,
    url,
    issuer,
    resource: (name) => `${issuer}/${name}/mcp`,
    store,
    stores: createAuthStores({ store, sealer, now }),
    now,
    advance: (ms) => void (t += ms),
    logs,
    close: async () => {
      await app.close();
      if (options.valkeyUrl) await store.close();
    },
  };
}

/** Registers a client directly in the store; a confidential one gets a secret. */
export async function registerClient(
  gw: AuthGateway,
  options: { method?: ClientRecord['tokenEndpointAuthMethod']; grantTypes?: string[] } = {},
): Promise<{ clientId: string; secret?: string; redirectUri: string }> {
  const method = options.method ?? 'none';
  const clientId = randomToken(12);
  const secret = method === 'none' ? undefined : randomToken(32);
  const redirectUri = 'http://127.0.0.1:33418/callback';
  await gw.stores.clients.put(
    {
      clientId,
      kind: 'dcr',
      tokenEndpointAuthMethod: method,
      ...(secret ? { secretHash: tokenHash(secret) } : {}),
      redirectUris: [redirectUri],
      grantTypes: options.grantTypes ?? ['authorization_code', 'refresh_token'],
      createdAt: gw.now(),
    },
    86_400_000,
  );
  return { clientId, secret, redirectUri };
}

/** What `/oauth/callback` leaves behind: a session, its IdP tokens, and our code for the client. */
export async function seedLogin(
  gw: AuthGateway,
  options: { clientId: string; redirectUri: string; resource: string; subject?: string; scopes?: string[]; idpTokens?: IdpTokens; codeTtlMs?: number },
): Promise<{ code: string; verifier: string; sessionId: string }> {
  const subject = options.subject ?? 'alice';
  const sessionId = randomToken(16);
  const verifier = randomBytes(32).toString('base64url');
  const code = randomToken(32);
  // Seven days: the default sessionMaxLifetime, below refreshTokenTtl (30 days).
  await gw.stores.sessions.put({ sessionId, subject, clientId: options.clientId, createdAt: gw.now(), expiresAt: gw.now() + 7 * 86_400_000 });
  await gw.stores.idpTokens.put(sessionId, options.idpTokens ?? { accessToken: `idp-at-${randomToken(8)}`, expiresAt: gw.now() + 3_600_000 }, 7 * 86_400_000);
  await gw.stores.codes.put(
    code,
    {
      clientId: options.clientId,
      redirectUri: options.redirectUri,
      codeChallenge: pkceChallenge(verifier),
      resource: options.resource,
      scopes: options.scopes ?? ['mcp'],
      subject,
      sessionId,
      createdAt: gw.now(),
    },
    options.codeTtlMs ?? 60_000,
  );
  return { code, verifier, sessionId };
}

/** A form POST; returns status, headers and the parsed JSON body (or the text). */
export async function postForm(
  url: string | URL,
  params: Record<string, string>,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(params).toString(),
  });
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    body = { text };
  }
  return { status: res.status, headers: res.headers, body };
}

/** Runs the whole code exchange for a fresh login; returns our tokens. */
export async function login(
  gw: AuthGateway,
  client: { clientId: string; redirectUri: string },
  options: { resource: string; subject?: string; idpTokens?: IdpTokens },
): Promise<{ accessToken: string; refreshToken: string; sessionId: string }> {
  const seeded = await seedLogin(gw, { ...client, ...options });
  const res = await postForm(`${gw.issuer}/oauth/token`, {
    grant_type: 'authorization_code',
    client_id: client.clientId,
    code: seeded.code,
    redirect_uri: client.redirectUri,
    code_verifier: seeded.verifier,
    resource: options.resource,
  });
  if (res.status !== 200) throw new Error(`token exchange failed: ${res.status} ${JSON.stringify(res.body)}`);
  return { accessToken: String(res.body.access_token), refreshToken: String(res.body.refresh_token), sessionId: seeded.sessionId };
}
