import { Pool } from 'undici';
import type { DestinationStream } from 'pino';
import type { Config, UpstreamConfig } from './config/schema.ts';
import { createNoCredential } from './credentials/none.ts';
import { createStaticCredential } from './credentials/static.ts';
import type { CredentialSource } from './credentials/types.ts';
import { openAccess } from './gateway/authenticate.ts';
import { createAuthRequiredRenderer } from './gateway/challenge.ts';
import { createClientCapabilities } from './gateway/client-capabilities.ts';
import { createMcpRoutes } from './gateway/mcp-route.ts';
import { createStreamRegistry } from './gateway/stream-registry.ts';
import type { Upstream } from './gateway/upstream.ts';
import { createOpsRoutes } from './http/ops-routes.ts';
import { createFrontDoor, type FrontDoor } from './http/server.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { createGatewayMetrics, createRegistry } from './observability/metrics.ts';

/** A running gateway, as the CLI and the tests hold it. */
export interface App {
  logger: Logger;
  frontDoor: FrontDoor;
  /** Starts listening on `server.listen` (or the given port, 0 for any). Resolves with the base URL bound. */
  listen(override?: { host?: string; port?: number }): Promise<URL>;
  /** Graceful stop (DESIGN §8): stop accepting, let streams finish within `server.drainTimeout`, then close. */
  close(): Promise<void>;
}

export interface AppOptions {
  /** Where log lines go (default stdout); tests capture them. */
  logDestination?: DestinationStream;
}

/**
 * The composition root: the only place that chooses concrete parts and wires them
 * (STYLE: one composition root). Everything else receives what it needs as arguments.
 */
export function createApp(config: Config, options: AppOptions = {}): App {
  const logger = createLogger({ level: config.server.logLevel, destination: options.logDestination });
  const registry = createRegistry();
  const metrics = createGatewayMetrics(registry);
  const publicUrl = new URL(config.server.publicUrl);
  const basePath = publicUrl.pathname.replace(/\/+$/, '');
  let draining = false;

  if (config.server.devMode) logger.warn({ msg: 'devMode is on: http URLs and loopback addresses are allowed; never use it in production' });

  const upstreams: Upstream[] = config.upstreams.map((u) => ({
    name: u.name,
    url: new URL(u.url),
    resource: `${publicUrl.origin}${basePath}/${u.name}/mcp`,
    dispatcher: new Pool(new URL(u.url).origin, {
      keepAliveTimeout: 30_000,
      headersTimeout: config.server.upstreamTimeout,
      bodyTimeout: 0,
      connect: { timeout: Math.min(config.server.upstreamTimeout, 10_000) },
    }),
    credentials: credentialSourceFor(u),
  }));
  for (const u of config.upstreams) {
    if (u.auth.mode === 'static' && !config.idp) {
      logger.warn({ msg: 'static credential exposed without login: anyone who reaches the gateway uses it', upstream: u.name });
    }
  }

  // auth_required channels (DESIGN §6.4): what each agent session understands, and its open GET
  // streams for notifications/elicitation/complete (the upstream callback calls
  // streams.notifyElicitationComplete from its onConnected hook).
  const clientCapabilities = createClientCapabilities();
  const streams = createStreamRegistry();
  const challengeSettings = new Map(config.upstreams.map((u) => [u.name, 'challenge' in u.auth ? u.auth.challenge : ('auto' as const)]));
  const authRequired = createAuthRequiredRenderer({
    capabilities: clientCapabilities,
    streams,
    settingFor: (name) => challengeSettings.get(name) ?? 'auto',
    sseKeepAliveMs: config.server.sseKeepAlive,
  });

  const frontDoor = createFrontDoor({
    logger,
    metrics,
    publicUrl,
    trustedProxies: config.server.trustedProxies,
    routes: [
      ...createOpsRoutes({ registry, checks: [], isDraining: () => draining }),
      ...createMcpRoutes({
        upstreams,
        authenticator: openAccess,
        logger,
        metrics,
        publicOrigin: publicUrl.origin,
        allowedOrigins: config.server.allowedOrigins,
        maxBodyBytes: config.server.maxBodyBytes,
        upstreamTimeoutMs: config.server.upstreamTimeout,
        sseKeepAliveMs: config.server.sseKeepAlive,
        basePath,
        onInitialize: ({ upstream, rpc, mcpSessionId }) => clientCapabilities.recordInitialize({ upstream: upstream.name, mcpSessionId, capabilities: rpc.capabilities }),
        authRequired,
        clientCapabilities,
        streams,
      }),
    ],
  });

  return {
    logger,
    frontDoor,
    async listen(override = {}) {
      const [, host = '127.0.0.1', port = '8080'] = /^\[?(.*?)\]?:(\d+)$/.exec(config.server.listen) ?? [];
      const bound = await frontDoor.listen(override.host ?? host, override.port ?? Number(port));
      const shown = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
      logger.info({ msg: 'listening', address: `${shown}:${bound.port}`, publicUrl: publicUrl.href, upstreams: upstreams.map((u) => u.name) });
      return new URL(`http://${shown}:${bound.port}`);
    },
    async close() {
      draining = true;
      await frontDoor.shutdown(config.server.drainTimeout);
      await Promise.all(upstreams.map((u) => u.dispatcher.close().catch(() => undefined)));
      logger.info({ msg: 'stopped' });
    },
  };

  function credentialSourceFor(u: UpstreamConfig): CredentialSource {
    switch (u.auth.mode) {
      case 'none':
        return createNoCredential(u.name);
      case 'static':
        return createStaticCredential({ upstream: u.name, header: u.auth.header, value: u.auth.value });
      default:
        throw new Error(`auth mode "${u.auth.mode}" of upstream "${u.name}" is not available in this build`);
    }
  }
}
