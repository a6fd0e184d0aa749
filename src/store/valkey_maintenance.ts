/**
 * Maintenance access to the Valkey store, for operators' commands (`mcpgate keys reseal`): walks
 * over every key under the prefix (those holding a value, and those holding a set) and an in-place
 * swap that keeps the TTL. Its own connection and its own interface, so the request path's `Store`
 * port stays small.
 */
import type { Cluster, Redis } from 'iovalkey';
import type { SealedValueSource } from './reseal.ts';
import { StoreUnavailableError } from './port.ts';
import type { ValkeyStoreOptions } from './valkey.ts';
import { createValkeyClient, type ValkeyClient } from './valkey_client.ts';

/** Options of {@link createValkeyMaintenance}: the store's own, minus its request-path timeouts. */
export type ValkeyMaintenanceOptions = Omit<ValkeyStoreOptions, 'onError'> & {
  /** Keys asked for per SCAN call (a hint to the server). Default 500. */
  scanCount?: number;
};

/**
 * Swap in place when the value is still the one read, keeping the remaining TTL (SET … KEEPTTL):
 * a value rewritten by a serving replica meanwhile is never overwritten with an older one.
 * Returns 1 replaced, 0 changed, -1 gone. ARGV: expected, new value.
 */
const REPLACE_KEEPING_TTL = `
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return -1 end
if kind ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1`;

/**
 * Connects with the same options the store uses (standalone, Sentinel or Cluster, TLS) and
 * resolves once the connection is ready. SCAN runs on every master of a cluster (each holds only
 * its own slots) and on the master a Sentinel names. Every failure rejects with
 * `StoreUnavailableError`.
 */
export async function createValkeyMaintenance(options: ValkeyMaintenanceOptions): Promise<SealedValueSource> {
  const { keyPrefix, scanCount = 500 } = options;
  if (typeof keyPrefix !== 'string' || /[{}]/.test(keyPrefix)) {
    throw new TypeError('valkey: keyPrefix must be a string without { or }');
  }
  const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
  const client = createValkeyClient({ ...options, connectTimeoutMs, commandTimeoutMs: options.commandTimeoutMs ?? 10_000 });
  let lastError: Error | undefined;
  client.on('error', (error: Error) => {
    lastError = error;
  });
  try {
    await ready(client, connectTimeoutMs, () => lastError);
  } catch (error) {
    client.disconnect();
    throw error;
  }
  const isCluster = options.cluster !== undefined;
  const pattern = `${globEscape(keyPrefix)}*`;
  const strip = (key: string): string => key.slice(keyPrefix.length);
  const masters = (): Array<Redis | ValkeyClient> => (isCluster ? (client as Cluster).nodes('master') : [client]);

  async function* scanNode(node: Redis | ValkeyClient, type: 'string' | 'set', signal?: AbortSignal): AsyncGenerator<string[]> {
    let cursor = '0';
    do {
      signal?.throwIfAborted();
      const [next, keys] = await wrap('scan', () => node.scan(cursor, 'MATCH', pattern, 'COUNT', scanCount, 'TYPE', type));
      cursor = next;
      if (keys.length > 0) yield keys.map(strip);
    } while (cursor !== '0');
  }

  return {
    async *names(signal) {
      for (const node of masters()) yield* scanNode(node, 'string', signal);
    },

    async *setNames(signal) {
      for (const node of masters()) yield* scanNode(node, 'set', signal);
    },

    async get(name, signal) {
      signal?.throwIfAborted();
      return (await wrap('get', () => client.get(keyPrefix + name))) ?? undefined;
    },

    async replace(name, expected, value, signal) {
      signal?.throwIfAborted();
      const outcome = await wrap('replace', () => client.eval(REPLACE_KEEPING_TTL, 1, keyPrefix + name, expected, value));
      return outcome === 1 ? 'replaced' : outcome === -1 ? 'gone' : 'changed';
    },

    async close() {
      await Promise.race([client.quit().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
      client.disconnect();
    },
  };
}

function ready(client: ValkeyClient, timeoutMs: number, lastError: () => Error | undefined): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const cause = lastError();
      reject(new StoreUnavailableError(`valkey did not become ready within ${timeoutMs} ms${cause ? `: ${cause.message}` : ''}`, { cause }));
    }, timeoutMs);
    client.once('ready', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function wrap<T>(op: string, command: () => Promise<T>): Promise<T> {
  try {
    return await command();
  } catch (cause) {
    throw new StoreUnavailableError(`valkey ${op} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** SCAN MATCH is a glob: a prefix with `*`, `?`, `[` or `\` must match itself only. */
function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}
