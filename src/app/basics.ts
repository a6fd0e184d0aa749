/**
 * What every part of the gateway is assembled with: the configuration, the log, the metrics, the
 * clock and the names derived from the public URL.
 */
import { RESOURCE_SCOPES } from '../authserver/tokens/scopes.ts';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../observability/logger.ts';
import type { GatewayMetrics } from '../observability/metrics.ts';
import type { Tracer } from '../observability/tracing.ts';

/** Shared by every assembly function of `src/app/`. */
export interface AppBasics {
  config: Config;
  logger: Logger;
  metrics: GatewayMetrics;
  /** Spans of requests, authentication, credentials and upstream calls; a no-op without `observability.otlp`. */
  tracer: Tracer;
  /** The clock of the authorization server, the stores and the token checks, epoch ms. */
  now: () => number;
  publicUrl: URL;
  /** The path of the public URL without a trailing slash ('' at the root). */
  basePath: string;
  /** Our issuer identifier: the public URL without a trailing slash. */
  issuer: string;
  /** The resource URL of an upstream (`{issuer}/{name}/mcp`). */
  resourceOf(name: string): string;
  /** The scopes an upstream's resource needs. */
  scopesFor(name: string): readonly string[];
}

/** The names derived from `server.publicUrl`, and the scopes of each upstream. */
export function appBasics(options: Pick<AppBasics, 'config' | 'logger' | 'metrics' | 'tracer' | 'now'>): AppBasics {
  const { config } = options;
  const publicUrl = new URL(config.server.publicUrl);
  const basePath = publicUrl.pathname.replace(/\/+$/, '');
  const issuer = `${publicUrl.origin}${basePath}`;
  return {
    ...options,
    publicUrl,
    basePath,
    issuer,
    resourceOf: (name) => `${issuer}/${name}/mcp`,
    // Every upstream asks for the base scope (scopes.ts); per-upstream scopes would be decided here.
    scopesFor: (_name) => (config.idp ? RESOURCE_SCOPES : []),
  };
}
