/**
 * Turns the Valkey store's options into an iovalkey client (standalone, Sentinel or Cluster),
 * validating them first so a bad configuration fails at start-up, not at the first request.
 */
import type { ConnectionOptions } from 'node:tls';
import { createRequire } from 'node:module';
import type { Cluster, Redis, RedisOptions } from 'iovalkey';

/**
 * iovalkey, loaded when the first client is made (it is CommonJS, so a synchronous require keeps
 * this factory synchronous): a gateway on memory storage never pays its 5–6 MB of idle RSS.
 */
function iovalkey(): typeof import('iovalkey') {
  return createRequire(import.meta.url)('iovalkey') as typeof import('iovalkey');
}

/** Where the Valkey servers are and how to reach them; see `ValkeyStoreOptions`. */
export interface ValkeyConnectionOptions {
  url: string;
  username?: string | undefined;
  password?: string | undefined;
  tls?: boolean | ConnectionOptions | undefined;
  cluster?: { nodes?: string[] | undefined } | undefined;
  sentinel?: { masterName: string; nodes?: string[] | undefined; username?: string | undefined; password?: string | undefined } | undefined;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

/** The iovalkey client behind a store; both kinds offer the same commands. */
export type ValkeyClient = Redis | Cluster;

interface HostPort {
  host: string;
  port: number;
}

const SCHEMES: Record<string, { tls: boolean }> = {
  'redis:': { tls: false },
  'valkey:': { tls: false },
  'rediss:': { tls: true },
  'valkeys:': { tls: true },
};

/** Reconnect quickly at first, then once a second: recovery should show in /readyz within seconds. */
function reconnectDelay(attempt: number): number {
  return Math.min(attempt * 100, 1000);
}

/**
 * Creates the client; it starts connecting at once and reconnects for ever.
 *
 * The client is set to fail fast rather than wait: no offline queue (a command issued while
 * disconnected is refused, not parked until a reconnect that may never come), no resending of
 * commands that were in flight when the connection dropped (the caller was already told they
 * failed; replaying a write later would be a phantom write), and in-flight commands are rejected
 * as soon as the connection closes.
 */
export function createValkeyClient(options: ValkeyConnectionOptions): ValkeyClient {
  const { Cluster: ClusterClient, Redis: RedisClient } = iovalkey();
  const url = parseUrl(options.url);
  if (options.cluster !== undefined && options.sentinel !== undefined) {
    throw new TypeError('valkey: choose cluster or sentinel, not both');
  }
  const tls = tlsOptions(options.tls ?? url.tls);
  const common: RedisOptions = {
    username: options.username ?? url.username,
    password: options.password ?? url.password,
    connectTimeout: options.connectTimeoutMs,
    commandTimeout: options.commandTimeoutMs,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // A connection that stays silent this long while commands wait is presumed dead (a half-open
    // TCP connection would otherwise time every command out until the kernel gives up).
    socketTimeout: Math.max(options.commandTimeoutMs * 2, 1000),
    // Commands issued in the same event-loop turn leave in one write (a pipeline): the gateway
    // path starts its session, owner and credential reads together, and pays one round trip.
    enableAutoPipelining: true,
    ...(tls === undefined ? {} : { tls }),
  };

  if (options.cluster !== undefined) {
    if (url.db !== 0) throw new TypeError('valkey: a cluster has only database 0');
    const nodes = [url.node, ...(options.cluster.nodes ?? []).map((n) => parseNode(n, 'cluster.nodes'))];
    const cluster = new ClusterClient(nodes, {
      enableOfflineQueue: false,
      enableAutoPipelining: true,
      clusterRetryStrategy: reconnectDelay,
      redisOptions: common,
    });
    // Each node's client is made lazy and announced before it connects.
    cluster.on('+node', (node: Redis) => absorbLateSocketErrors(node));
    return cluster;
  }

  if (options.sentinel !== undefined) {
    const { masterName, nodes = [], username, password } = options.sentinel;
    if (typeof masterName !== 'string' || masterName.length === 0) {
      throw new TypeError('valkey: sentinel.masterName is required');
    }
    return connected(new RedisClient({
      ...common,
      lazyConnect: true,
      name: masterName,
      sentinels: [url.node, ...nodes.map((n) => parseNode(n, 'sentinel.nodes'))],
      sentinelUsername: username,
      sentinelPassword: password,
      ...(tls === undefined ? {} : { enableTLSForSentinelMode: true, sentinelTLS: tls }),
      db: url.db,
      enableOfflineQueue: false,
      retryStrategy: reconnectDelay,
      sentinelRetryStrategy: reconnectDelay,
    }));
  }

  return connected(new RedisClient({
    ...common,
    lazyConnect: true,
    ...url.node,
    db: url.db,
    enableOfflineQueue: false,
    retryStrategy: reconnectDelay,
  }));
}

/** A client made with `lazyConnect`, guarded, then connecting at once (failures arrive as 'error' events). */
function connected(client: Redis): Redis {
  absorbLateSocketErrors(client);
  client.connect().catch(() => undefined);
  return client;
}

/**
 * iovalkey listens for a connection's first socket error only (`once`). A TLS connection can
 * emit a second one, e.g. the server's alert arriving after our side refused its certificate; with
 * no listener left that error is thrown as an uncaught exception and ends the process (seen with
 * a Valkey whose certificate we do not trust). Every socket the client opens keeps a listener
 * that ignores errors after the first: the first still reaches the client, which reconnects.
 * Must run before the client connects.
 */
function absorbLateSocketErrors(client: Redis): void {
  const connector = (client as unknown as { connector: { connect(...args: unknown[]): Promise<NodeJS.EventEmitter> } }).connector;
  const connect = connector.connect.bind(connector);
  connector.connect = (...args) =>
    connect(...args).then((socket) => {
      socket.on('error', ignore);
      return socket;
    });
}

function ignore(): void {}

function tlsOptions(tls: boolean | ConnectionOptions): ConnectionOptions | undefined {
  if (tls === false) return undefined;
  return tls === true ? {} : tls;
}

/** Parses `redis[s]://[user[:password]@]host[:port][/db]`; errors never echo the URL (it may hold a password). */
function parseUrl(raw: string): { node: HostPort; db: number; tls: boolean; username?: string; password?: string } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TypeError('valkey: url is not a valid URL (expected redis://host:port/db or rediss://…)');
  }
  const scheme = SCHEMES[url.protocol];
  if (scheme === undefined) {
    throw new TypeError(`valkey: url scheme must be redis:, rediss:, valkey: or valkeys:, got ${url.protocol}`);
  }
  if (url.hostname === '') throw new TypeError('valkey: url has no host');
  const path = url.pathname.replace(/^\//, '');
  if (path !== '' && !/^\d{1,2}$/.test(path)) {
    throw new TypeError('valkey: url path must be a database number, e.g. /0');
  }
  return {
    // URL keeps IPv6 literals bracketed; sockets want them bare.
    node: { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: url.port === '' ? 6379 : Number(url.port) },
    db: path === '' ? 0 : Number(path),
    tls: scheme.tls,
    ...(url.username === '' ? {} : { username: decodeURIComponent(url.username) }),
    ...(url.password === '' ? {} : { password: decodeURIComponent(url.password) }),
  };
}

function parseNode(raw: string, where: string): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(raw);
  const port = Number(match?.[3]);
  if (match === null || port < 1 || port > 65535) {
    throw new TypeError(`valkey: ${where} entries must be host:port, got ${JSON.stringify(raw)}`);
  }
  return { host: match[1] ?? match[2] ?? '', port };
}
