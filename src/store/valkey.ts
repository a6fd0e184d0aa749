/**
 * The Valkey storage adapter, on iovalkey: for several replicas sharing state.
 */
import type { ConnectionOptions } from 'node:tls';
import { assertKey, assertTtl } from './checks.ts';
import { StoreUnavailableError, type Store } from './port.ts';
import { createValkeyClient, type ValkeyClient } from './valkey_client.ts';
import { createValkeyCommandRunner, type RunValkeyCommand } from './valkey_command.ts';

/** Options of {@link createValkeyStore}. */
export interface ValkeyStoreOptions {
  /**
   * `redis://[user[:password]@]host[:port][/db]`; `rediss://` (or `tls`) for TLS. `valkey://` and
   * `valkeys://` are accepted too. With `cluster` or `sentinel` it names the first node to contact.
   */
  url: string;
  /** ACL user; overrides the one in `url`. */
  username?: string;
  /** Password; overrides the one in `url`. */
  password?: string;
  /**
   * Prepended to every key, so several deployments can share one server (e.g. `mcpgate:`).
   * It may not contain `{` or `}`: in a cluster the first `{…}` of a key picks its hash slot, and
   * the domain stores use hash tags to keep a session's keys together.
   */
  keyPrefix: string;
  /** `true` or Node TLS options (CA, client certificate, servername). Default: from the URL scheme. */
  tls?: boolean | ConnectionOptions;
  /** Cluster mode; `nodes` (`host:port`) are extra seed nodes besides the one in `url`. */
  cluster?: { nodes?: string[] };
  /**
   * Sentinel mode: `url` names a sentinel, `nodes` (`host:port`) more sentinels, `masterName` the
   * monitored master; `username`/`password` authenticate to the sentinels themselves.
   */
  sentinel?: { masterName: string; nodes?: string[]; username?: string; password?: string };
  /** How long to wait for a TCP (and TLS) connection, in milliseconds. Default 5000. */
  connectTimeoutMs?: number;
  /**
   * Upper bound on one store call, in milliseconds, including waiting for a connection to become
   * ready: past it the call rejects with `StoreUnavailableError`. Default 2000.
   */
  commandTimeoutMs?: number;
  /** Told about connection errors (they recur on every reconnect attempt while Valkey is down). */
  onError?: (error: Error) => void;
}

/**
 * Compare-and-set in one step on the server. ARGV: has-expected flag, expected, value, ttl.
 * GET on a missing key yields `false` in Lua, which never equals a string.
 */
const COMPARE_AND_SET = `
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1`;

/**
 * Compare-and-delete in one step on the server (the release of an owned lock). ARGV: expected.
 * A set under the key is a WRONGTYPE error, as for every other value operation.
 */
const DELETE_IF_EQUALS = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0`;

/**
 * SADD and a TTL that only grows, in one step (a half-written index would be a set that never
 * expires). PTTL is -1 for the new set SADD just created, so it always gets the TTL.
 * ARGV: ttl, then the members (added one by one: unpack() has a small stack limit).
 */
const ADD_MEMBERS = `
for i = 2, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1`;

/** What the operations share: the connection, its runner, how keys are named, and its state. */
interface ValkeyStoreContext {
  readonly client: ValkeyClient;
  readonly run: RunValkeyCommand;
  /** The key under the prefix; a bad key is a `TypeError`. */
  readonly key: (key: string) => string;
  readonly isCluster: boolean;
  readonly commandTimeoutMs: number;
  readonly state: ValkeyStoreState;
}

interface ValkeyStoreState {
  closed: boolean;
  /**
   * The last connection error, kept as the cause of a failed ping, so /readyz can say why
   * (ECONNREFUSED, WRONGPASS) and not only that the store did not answer. Forgotten on the next
   * successful ping, not on 'ready': with a refused AUTH the client flaps through 'ready' on
   * every reconnect.
   */
  connectionError: Error | undefined;
}

/**
 * Creates a store backed by Valkey (or Redis ≥ 6.2). Options are checked here; the connection is
 * opened in the background and re-opened whenever it drops.
 *
 * Every failure — refused or lost connection, timeout, an error reply — rejects with
 * `StoreUnavailableError` carrying the cause; an outage is never reported as a missing key.
 * A call made while disconnected waits for the connection at most `commandTimeoutMs`, then fails;
 * it is never queued to run later. Aborting `signal` rejects the call with the signal's reason.
 * A timeout or abort after the command was sent cannot recall it: it may still have run (a timed
 * out `take` may have consumed the value), so callers must treat the outcome as unknown.
 *
 * Each method is a single command or script, hence atomic: `take` is GETDEL, `setIfAbsent` is
 * SET NX PX, `compareAndSet`, `deleteIfEquals` and `addMembers` are Lua scripts. `delete` of several keys is one DEL
 * (atomic) on a single server, and one DEL per key in a cluster, where keys may live on different
 * shards.
 */
export function createValkeyStore(options: ValkeyStoreOptions): Store {
  const { keyPrefix, connectTimeoutMs = 5000, commandTimeoutMs = 2000, onError } = options;
  if (typeof keyPrefix !== 'string' || /[{}]/.test(keyPrefix)) {
    throw new TypeError('valkey: keyPrefix must be a string without { or }');
  }
  for (const [name, value] of [['connectTimeoutMs', connectTimeoutMs], ['commandTimeoutMs', commandTimeoutMs]] as const) {
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new TypeError(`valkey: ${name} must be a positive integer (milliseconds)`);
    }
  }
  const client = createValkeyClient({ ...options, connectTimeoutMs, commandTimeoutMs });
  const state: ValkeyStoreState = { closed: false, connectionError: undefined };
  // Without a listener, iovalkey prints every reconnect failure to the console.
  client.on('error', (error: Error) => {
    state.connectionError = error;
    onError?.(error);
  });
  const context: ValkeyStoreContext = {
    client,
    run: createValkeyCommandRunner({ client, commandTimeoutMs, isClosed: () => state.closed, closedMessage: 'valkey store is closed' }),
    key: (key) => {
      assertKey(key);
      return keyPrefix + key;
    },
    isCluster: options.cluster !== undefined,
    commandTimeoutMs,
    state,
  };

  return {
    get: (key, signal) => getValue(context, key, signal),
    set: (key, value, ttlMs, signal) => setValue(context, key, value, ttlMs, signal),
    setIfAbsent: (key, value, ttlMs, signal) => setValueIfAbsent(context, key, value, ttlMs, signal),
    take: (key, signal) => takeValue(context, key, signal),
    delete: (keys, signal) => deleteKeys(context, keys, signal),
    compareAndSet: (key, expected, value, ttlMs, signal) => compareAndSet(context, key, expected, value, ttlMs, signal),
    deleteIfEquals: (key, expected, signal) => deleteIfEquals(context, key, expected, signal),
    addMembers: (key, members, ttlMs, signal) => addMembers(context, key, members, ttlMs, signal),
    removeMembers: (key, members, signal) => removeMembers(context, key, members, signal),
    members: (key, signal) => listMembers(context, key, signal),
    ping: (signal) => ping(context, signal),
    close: () => close(context),
  };
}

const orUndefined = (value: string | null): string | undefined => value ?? undefined;

async function getValue({ run, key: k }: ValkeyStoreContext, key: string, signal: AbortSignal | undefined): Promise<string | undefined> {
  const prefixed = k(key);
  return run('get', signal, async (c) => orUndefined(await c.get(prefixed)));
}

async function setValue({ run, key: k }: ValkeyStoreContext, key: string, value: string, ttlMs: number, signal: AbortSignal | undefined): Promise<void> {
  const prefixed = k(key);
  assertTtl(ttlMs);
  await run('set', signal, (c) => c.set(prefixed, value, 'PX', ttlMs));
}

async function setValueIfAbsent(
  { run, key: k }: ValkeyStoreContext,
  key: string,
  value: string,
  ttlMs: number,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  const prefixed = k(key);
  assertTtl(ttlMs);
  return (await run('setIfAbsent', signal, (c) => c.set(prefixed, value, 'PX', ttlMs, 'NX'))) === 'OK';
}

async function takeValue({ run, key: k }: ValkeyStoreContext, key: string, signal: AbortSignal | undefined): Promise<string | undefined> {
  const prefixed = k(key);
  return run('take', signal, async (c) => orUndefined(await c.getdel(prefixed)));
}

async function deleteKeys({ run, key: k, isCluster }: ValkeyStoreContext, keys: string | string[], signal: AbortSignal | undefined): Promise<void> {
  const list = (typeof keys === 'string' ? [keys] : keys).map(k);
  if (list.length === 0) return;
  await run<unknown>('delete', signal, (c) =>
    isCluster ? Promise.all(list.map((key) => c.del(key))) : c.del(...list),
  );
}

async function compareAndSet(
  { run, key: k }: ValkeyStoreContext,
  key: string,
  expected: string | undefined,
  value: string,
  ttlMs: number,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  const prefixed = k(key);
  assertTtl(ttlMs);
  const args = [expected === undefined ? '0' : '1', expected ?? '', value, String(ttlMs)];
  return (await run('compareAndSet', signal, (c) => c.eval(COMPARE_AND_SET, 1, prefixed, ...args))) === 1;
}

async function deleteIfEquals({ run, key: k }: ValkeyStoreContext, key: string, expected: string, signal: AbortSignal | undefined): Promise<boolean> {
  const prefixed = k(key);
  return (await run('deleteIfEquals', signal, (c) => c.eval(DELETE_IF_EQUALS, 1, prefixed, expected))) === 1;
}

async function addMembers(
  { run, key: k }: ValkeyStoreContext,
  key: string,
  members: string[],
  ttlMs: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  const prefixed = k(key);
  assertTtl(ttlMs);
  if (members.length === 0) return;
  await run('addMembers', signal, (c) => c.eval(ADD_MEMBERS, 1, prefixed, String(ttlMs), ...members));
}

async function removeMembers({ run, key: k }: ValkeyStoreContext, key: string, members: string[], signal: AbortSignal | undefined): Promise<void> {
  const prefixed = k(key);
  if (members.length === 0) return;
  await run('removeMembers', signal, (c) => c.srem(prefixed, ...members));
}

async function listMembers({ run, key: k }: ValkeyStoreContext, key: string, signal: AbortSignal | undefined): Promise<string[]> {
  const prefixed = k(key);
  return run('members', signal, (c) => c.smembers(prefixed));
}

async function ping({ client, run, state }: ValkeyStoreContext, signal: AbortSignal | undefined): Promise<void> {
  // Down after a failed attempt: say so now, with the reason, rather than wait out the deadline
  // (the readiness probe's own 2 s timeout would win that race and hide the reason).
  if (!state.closed && state.connectionError !== undefined && client.status !== 'ready') {
    throw new StoreUnavailableError('valkey ping failed: not connected', { cause: state.connectionError });
  }
  try {
    await run('ping', signal, (c) => c.ping());
  } catch (error) {
    const connectionError = state.connectionError;
    if (connectionError === undefined || !(error instanceof StoreUnavailableError)) throw error;
    throw new StoreUnavailableError(`${error.message} (last connection error: ${connectionError.message})`, { cause: connectionError });
  }
  state.connectionError = undefined;
}

async function close({ client, state, commandTimeoutMs }: ValkeyStoreContext): Promise<void> {
  if (state.closed) return;
  state.closed = true;
  // QUIT lets replies already on their way arrive; disconnect() also stops reconnecting.
  const timeout = new Promise((resolve) => setTimeout(resolve, commandTimeoutMs).unref());
  await Promise.race([client.quit().catch(() => undefined), timeout]);
  client.disconnect();
}
