/**
 * The login endpoints (authorize, callback, consent, register) on a real front door on loopback,
 * federated to a real development IdP (`oidc-provider`), over the real domain stores on a memory
 * store with a fake clock the test can move. No metadata or token endpoint: the tests of this leg
 * stop where the client receives its code.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createCimdResolver, type CimdResolver } from '../../src/authserver/clients/cimd.ts';
import { createCookieCodec } from '../../src/authserver/login/cookies.ts';
import { sendErrorPage } from '../../src/authserver/login/html.ts';
import { createClientLookup } from '../../src/authserver/clients/lookup.ts';
import { createLoginRoutes } from '../../src/authserver/login/login-flow.ts';
import type { LoginFlow } from '../../src/authserver/login/types.ts';
import type { AuthStores } from '../../src/authserver/records/records.ts';
import type { RedirectSchemePolicy } from '../../src/authserver/clients/redirect-uri.ts';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { createSessionEnding } from '../../src/authserver/records/session-end.ts';
import { applyRouteLimits } from '../../src/http/route-limits.ts';
import { createFrontDoor, type FrontDoor } from '../../src/http/server.ts';
import { createOidcIdpClient } from '../../src/idp/oidc.ts';
import type { IdpClient } from '../../src/idp/types.ts';
import { createGuardedFetch, type GuardedFetch } from '../../src/net/guarded-fetch.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createGatewayMetrics, createRegistry } from '../../src/observability/metrics.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/port.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { freePort } from '../support/gateway.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { captureLogs, type LogCapture } from '../support/logs.ts';

/** Options of {@link startLoginServer}. */
export interface LoginServerOptions {
  /** Upstream names; their resources are `{issuer}/{name}/mcp`. Default `['kube']`. */
  upstreams?: string[];
  /** An IdP shared between servers; default a fresh one, closed with the server. */
  idp?: DevIdp;
  registration?: { dynamic: boolean; initialAccessToken: string | null; unusedTtl?: number; maxUnused?: number };
  /** `authServer.maxSessionsPerUser`; default 20. */
  maxSessionsPerUser?: number;
  /** Runs for every session ended through the session-ending path (as the upstream grants' clean-up does). */
  onSessionEnded?: (sessionId: string) => Promise<void>;
  /** Registrations per IP and minute. Default 1000. */
  registrationLimit?: number;
  /** Requests per IP and minute on each browser route (authorize, callback, consent, sign-in). Default 1000. */
  authorizeLimit?: number;
  /** The ID-token claim naming the user (`idp.userClaim`). Default `sub`. */
  userClaim?: string;
  /** Metadata documents: `dev` allows http and loopback documents, `strict` is production, `off` disables CIMD. Default `dev`. */
  cimd?: 'dev' | 'strict' | 'off';
  /** `authServer.registration.redirectSchemes`. Default: none (any scheme but the never-accepted ones). */
  redirectSchemes?: RedirectSchemePolicy;
}

export interface LoginServer {
  /** `http://127.0.0.1:<port>`: the issuer and public URL. */
  issuer: string;
  resource(name: string): string;
  idp: DevIdp;
  idpClient: IdpClient;
  store: Store;
  stores: AuthStores;
  /** The fake clock (epoch ms) of the store and the flow; starts at the real time. */
  now(): number;
  advance(ms: number): void;
  logs: LogCapture;
  frontDoor: FrontDoor;
  close(): Promise<void>;
}

export async function startLoginServer(options: LoginServerOptions = {}): Promise<LoginServer> {
  let clock = Date.now();
  const now = () => clock;
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const idp = options.idp ?? (await startDevIdp());
  const logs = captureLogs();
  const logger = createLogger({ level: 'info', destination: logs.destination });
  const store = createMemoryStore({ now });
  const stores = createAuthStores({ store, sealer: createSealer({ keys: [{ id: 'k1', key: randomBytes(32) }] }), now });
  const idpClient = createOidcIdpClient({
    config: { issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret, scopes: ['openid', 'profile', 'email', 'offline_access'], userClaim: options.userClaim ?? 'sub', authParams: {} },
    redirectUri: `${issuer}/oauth/callback`,
    devMode: true,
    now,
  });
  const mode = options.cimd ?? 'dev';
  let fetcher: GuardedFetch | undefined;
  let cimd: CimdResolver | undefined;
  if (mode !== 'off') {
    fetcher = createGuardedFetch(mode === 'dev' ? { allowHttp: true, allowPrivate: true } : {});
    cimd = createCimdResolver({ fetch: fetcher, store, sealer: createSealer({ keys: [{ id: 'k1', key: randomBytes(32) }] }), allowHttp: mode === 'dev', now, redirectSchemes: options.redirectSchemes });
  }
  const flow: LoginFlow = {
    issuer,
    stores,
    idp: idpClient,
    clients: createClientLookup({ stores, cimd }),
    resources: (options.upstreams ?? ['kube']).map((name) => `${issuer}/${name}/mcp`),
    scopesSupported: ['mcp'],
    defaultScopes: ['mcp'],
    cookies: createCookieCodec({ key: randomBytes(32), secure: false, now }),
    logger,
    sessionTtlMs: 30 * 86_400_000,
    codeTtlMs: 120_000,
    pendingTtlMs: 600_000,
    consentTtlMs: 90 * 86_400_000,
    clientIdleTtlMs: 90 * 86_400_000,
    now,
    maxSessionsPerUser: options.maxSessionsPerUser,
    endSession: createSessionEnding({ sessions: stores.sessions, onSessionEnded: options.onSessionEnded ? [options.onSessionEnded] : [], logger }),
    redirectSchemes: options.redirectSchemes,
  };
  const browserLimit = { perIp: options.authorizeLimit ?? 1000, global: 100_000 };
  const routes = applyRouteLimits(
    createLoginRoutes({ flow, registration: options.registration ?? { dynamic: true, initialAccessToken: null } }),
    {
      store,
      basePath: '',
      overrides: {
        authorize: browserLimit,
        authorizeResume: browserLimit,
        callback: browserLimit,
        consent: browserLimit,
        signIn: browserLimit,
        register: { perIp: options.registrationLimit ?? 1000, global: 100_000 },
      },
      sendPage: (ctx, status, title, message, headers) => sendErrorPage(ctx.res, status, title, message, { headers }),
      now,
    },
  );
  const frontDoor = createFrontDoor({ routes, logger, metrics: createGatewayMetrics(createRegistry()), publicUrl: new URL(issuer), trustedProxies: [] });
  await frontDoor.listen('127.0.0.1', port);

  return {
    issuer,
    resource: (name) => `${issuer}/${name}/mcp`,
    idp,
    idpClient,
    store,
    stores,
    now,
    advance(ms) {
      clock += ms;
    },
    logs,
    frontDoor,
    async close() {
      await frontDoor.shutdown(1000);
      await fetcher?.close();
      await store.close();
      if (!options.idp) await idp.close();
    },
  };
}

/** A PKCE pair (RFC 7636, S256). */
export function pkcePair(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/** Registers a client by DCR and returns its response body. */
export async function registerClient(issuer: string, metadata: Record<string, unknown>): Promise<Record<string, unknown> & { client_id: string }> {
  const res = await fetch(`${issuer}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(metadata) });
  if (res.status !== 201) throw new Error(`registration failed: ${res.status} ${await res.text()}`);
  return (await res.json()) as Record<string, unknown> & { client_id: string };
}

/** A loopback HTTP server: the agent's redirect target, or a metadata document host. Records every request. */
export interface RecordingServer {
  url: string;
  port: number;
  requests: URL[];
  /** Resolves with the next request whose path is `path`. */
  next(path: string): Promise<URL>;
  close(): Promise<void>;
}

export async function startRecordingServer(
  respond: (req: IncomingMessage, res: ServerResponse, url: URL) => void = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('You can close this window.');
  },
): Promise<RecordingServer> {
  const requests: URL[] = [];
  const waiters: Array<{ path: string; resolve: (url: URL) => void }> = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    requests.push(url);
    const index = waiters.findIndex((w) => w.path === url.pathname);
    if (index >= 0) waiters.splice(index, 1)[0]!.resolve(url);
    respond(req, res, url);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    next: (path) => new Promise((resolve) => waiters.push({ path, resolve })),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
