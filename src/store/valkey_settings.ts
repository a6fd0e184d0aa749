/**
 * `storage.valkey` as an operator writes it (one server by URL, a Sentinel group, or Cluster seed
 * nodes; TLS material as PEM text) turned into the Valkey adapter's options. Shared by the gateway
 * and by `mcpgate keys reseal`, so both reach the same servers the same way.
 */
import type { ValkeyStoreOptions } from './valkey.ts';

/** Where Valkey is; the validated `storage.valkey` section has this shape. Exactly one of `url`, `sentinel`, `cluster`. */
export interface ValkeySettings {
  /** One server: `redis://host:port/db` or `rediss://…` for TLS. */
  url?: string | undefined;
  /** Found through Sentinels: the monitored master's name and the Sentinels (`host:port`). */
  sentinel?: { masterName: string; nodes: string[]; username?: string | undefined; password?: string | undefined } | undefined;
  /** A cluster: seed nodes (`host:port`); the rest are discovered. */
  cluster?: { nodes: string[] } | undefined;
  /** TLS (on with a `rediss://` url or whenever this is present): PEM texts and the name the server certificate must carry. */
  tls?: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined; serverName?: string | undefined } | undefined;
  username?: string | undefined;
  password?: string | undefined;
  keyPrefix: string;
}

/** The adapter options for {@link ValkeySettings}; throws `TypeError` when none or several of url/sentinel/cluster is set. */
export function valkeyStoreOptions(settings: ValkeySettings): ValkeyStoreOptions {
  const { url, sentinel, cluster, tls } = settings;
  const modes = [url, sentinel, cluster].filter((m) => m !== undefined).length;
  if (modes !== 1) throw new TypeError('storage.valkey: set exactly one of url, sentinel or cluster');
  const common = {
    keyPrefix: settings.keyPrefix,
    ...(settings.username === undefined ? {} : { username: settings.username }),
    ...(settings.password === undefined ? {} : { password: settings.password }),
    ...(tls === undefined
      ? {}
      : {
          tls: {
            ...(tls.ca === undefined ? {} : { ca: tls.ca }),
            ...(tls.cert === undefined ? {} : { cert: tls.cert }),
            ...(tls.key === undefined ? {} : { key: tls.key }),
            ...(tls.serverName === undefined ? {} : { servername: tls.serverName }),
          },
        }),
  };
  if (sentinel !== undefined) {
    // The adapter contacts the node in `url` first; the scheme is irrelevant (TLS comes from `tls`).
    const [first, ...rest] = sentinel.nodes;
    return {
      ...common,
      url: `redis://${first}`,
      sentinel: {
        masterName: sentinel.masterName,
        nodes: rest,
        ...(sentinel.username === undefined ? {} : { username: sentinel.username }),
        ...(sentinel.password === undefined ? {} : { password: sentinel.password }),
      },
    };
  }
  if (cluster !== undefined) {
    const [first, ...rest] = cluster.nodes;
    return { ...common, url: `redis://${first}`, cluster: { nodes: rest } };
  }
  return { ...common, url: url! };
}
