import type { DestinationStream } from 'pino';
import type { Config } from './config/schema.ts';
import type { FrontDoor } from './http/server.ts';
import type { IdpClient } from './idp/types.ts';
import { createGuardedFetch } from './net/guarded-fetch.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { createGatewayMetrics, createRegistry } from './observability/metrics.ts';
import { tracerFor } from './observability/tracing.ts';
import type { Store } from './store/port.ts';
import { assembleSessions } from './app/authserver.ts';
import { appBasics } from './app/basics.ts';
import { assembleUpstreams } from './app/credentials.ts';
import { assembleGateway } from './app/gateway.ts';
import { loadModule } from './app/lazy.ts';
import type * as LoginAssembly from './app/login.ts';
import { assembleStorage } from './app/storage.ts';
import { assembleUpstreamOAuth } from './app/upstream-oauth.ts';

/** A running gateway, as the CLI and the tests hold it. */
export interface App {
  logger: Logger;
  frontDoor: FrontDoor;
  /** Starts listening on `server.listen` (or the given port, 0 for any). Resolves with the base URL bound. */
  listen(override?: { host?: string; port?: number }): Promise<URL>;
  /** Graceful stop: stop accepting, let streams finish within `server.drainTimeout`, then close. */
  close(): Promise<void>;
}

export interface AppOptions {
  /** Where log lines go (default stdout); tests capture them. */
  logDestination?: DestinationStream;
  /** The storage backend; default the one `storage.kind` names. Tests pass a memory store on a fake clock. */
  store?: Store;
  /** The company IdP; default the client `idp.kind` names (openid-client against `idp.issuer`, or plain OAuth 2.0). */
  idpClient?: IdpClient;
  /** The clock of the authorization server, the stores and the token checks, epoch ms. Default `Date.now`. */
  now?: () => number;
}

/**
 * The composition root: the only place that chooses concrete parts and wires them. Everything
 * else receives what it needs as arguments; each part is assembled by its function in
 * `src/app/`, in the order below.
 */
export function createApp(config: Config, options: AppOptions = {}): App {
  const logger = createLogger({ level: config.server.logLevel, destination: options.logDestination });
  const registry = createRegistry();
  const tracer = tracerFor(config.observability?.otlp, logger);
  const basics = appBasics({ config, logger, metrics: createGatewayMetrics(registry), tracer, now: options.now ?? Date.now });
  let draining = false;
  // Aborted when the drain begins: SSE streams end at an event boundary so agents resume elsewhere.
  const drain = new AbortController();
  if (config.server.devMode) logger.warn({ msg: 'devMode is on: http URLs and loopback addresses are allowed; never use it in production' });

  // Storage and sealing, under every part.
  const storage = assembleStorage({ basics, store: options.store });
  // Every server-side fetch (token endpoints, discovery, CIMD) goes through the one SSRF guard.
  const serverFetch = createGuardedFetch({ allowHttp: config.server.devMode, allowPrivate: config.server.devMode, allowHosts: config.server.allowHosts });
  // Upstreams with their own authorization server: each session's connection to them.
  const upstreamOAuth = assembleUpstreamOAuth({ basics, storage, serverFetch });
  // The authorization server and, only when the company IdP is configured, login.
  const sessions = assembleSessions({ basics, storage, upstreamOAuth, idpClient: options.idpClient });
  const login = sessions.idpClient ? loadModule<typeof LoginAssembly>('./login').assembleLogin({ basics, storage, sessions, idpClient: sessions.idpClient, upstreamOAuth, serverFetch }) : undefined;
  // Each upstream with the credential its mode names.
  const upstreams = assembleUpstreams({ basics, idpSession: login?.idpSession, endSession: sessions.endSession, upstreamOAuth, serverFetch });
  // The gateway routes, the auth_required channels and the front door.
  const { frontDoor, elicitationEvents, bus } = assembleGateway({
    basics, registry, storage, sessions, login, upstreamOAuth, upstreams, drain: drain.signal, isDraining: () => draining,
  });

  return {
    logger,
    frontDoor,
    async listen(override = {}) {
      // One attempt now; while Valkey is unreachable it goes on in the background and /readyz fails ("events").
      await elicitationEvents.start();
      const [, host = '127.0.0.1', port = '8080'] = /^\[?(.*?)\]?:(\d+)$/.exec(config.server.listen) ?? [];
      const bound = await frontDoor.listen(override.host ?? host, override.port ?? Number(port));
      const shown = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
      logger.info({ msg: 'listening', address: `${shown}:${bound.port}`, publicUrl: basics.publicUrl.href, upstreams: upstreams.map((u) => u.name) });
      return new URL(`http://${shown}:${bound.port}`);
    },
    async close() {
      // /readyz fails from now on; then the listener closes, streams end at an event boundary,
      // requests in flight finish, and whatever is left at drainTimeout is cut.
      draining = true;
      drain.abort();
      await frontDoor.shutdown(config.server.drainTimeout);
      await Promise.all(upstreams.map((u) => u.dispatcher.close().catch(() => undefined)));
      await elicitationEvents.close();
      await bus.close().catch(() => undefined);
      await storage.store.close().catch(() => undefined);
      await serverFetch.close().catch(() => undefined);
      // The spans of the last requests, exported before the process goes.
      await tracer.shutdown();
      logger.info({ msg: 'stopped' });
    },
  };
}
