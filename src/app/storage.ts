/**
 * Storage and sealing: the store `storage.kind` names, the key every record is sealed with, the
 * single flight that goes with the store, and the message bus between replicas.
 */
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import { createFleetSingleFlight, createSingleFlight, type SingleFlight } from '../credentials/single-flight.ts';
import type { Logger } from '../observability/logger.ts';
import { createMemoryBus, type MessageBus } from '../store/bus.ts';
import { createMemoryStore } from '../store/memory.ts';
import { observeStoreFailures } from '../store/observed.ts';
import type { Store } from '../store/port.ts';
import { createSealer, withOpenedCache, type Sealer } from '../store/sealed.ts';
import { createValkeyStore } from '../store/valkey.ts';
import { createValkeyBus } from '../store/valkey_bus.ts';
import { valkeyStoreOptions } from '../store/valkey_settings.ts';
import type { AppBasics } from './basics.ts';

/** The store every part shares, and what goes with it. */
export interface Storage {
  store: Store;
  sealer: Sealer;
  /** What consumes a one-time value (a rotating refresh token, a registration) runs once at a time. */
  singleFlight: SingleFlight;
}

/** Records whose opened text is kept while their sealed bytes are unchanged (store/sealed.ts `withOpenedCache`). */
const OPENED_CACHE_ENTRIES = 10_000;

/** Opens the store (`options.store` when a test passes one) and builds the sealer and the single flight. */
export function assembleStorage(options: { basics: AppBasics; store: Store | undefined }): Storage {
  const { config, now, logger, metrics } = options.basics;
  if (config.storage.kind === 'valkey' && config.storage.encryptionKeys.length === 0) {
    // A per-process key would make every value unreadable to the other replicas and after a restart.
    throw new Error('storage.encryptionKeys: required with valkey (values are always sealed at rest)');
  }
  // Every failed operation is counted, whichever answer (503, an HTML page, /readyz) it ends in.
  const store = observeStoreFailures(options.store ?? storeFor(config, now, logger), (op) => metrics.storeErrors.inc({ op }));
  const sealer = withOpenedCache(createSealer({
    keys:
      config.storage.encryptionKeys.length > 0
        ? config.storage.encryptionKeys.map((k) => ({ id: k.id, key: Buffer.from(k.key, 'base64') }))
        : // Memory storage dies with the process, and so may its key.
          [{ id: 'ephemeral', key: randomBytes(32) }],
  }), OPENED_CACHE_ENTRIES);
  // Across every replica when they share Valkey, in this process with memory storage.
  const singleFlight = config.storage.kind === 'valkey' ? createFleetSingleFlight({ store }) : createSingleFlight();
  return { store, sealer, singleFlight };
}

/** The message bus that goes with `storage.kind`: in process for memory, Valkey pub/sub (connections of its own) for valkey. */
export function busFor(config: Config, logger: Logger): MessageBus {
  const valkey = config.storage.valkey;
  const onHandlerError = (error: unknown) => logger.error({ msg: 'event handler failed', err: (error as Error).message });
  if (config.storage.kind === 'memory' || !valkey) return createMemoryBus({ onHandlerError });
  return createValkeyBus({
    // The same servers, credentials and TLS as the store (standalone, Sentinel or Cluster).
    ...valkeyStoreOptions(valkey),
    onError: (error) => logger.warn({ msg: 'valkey event bus connection error', err: error.message }),
    onHandlerError,
  });
}

/** The storage backend `storage.kind` names. */
function storeFor(config: Config, now: () => number, logger: Logger): Store {
  const valkey = config.storage.valkey;
  if (config.storage.kind === 'memory' || !valkey) return createMemoryStore({ now, maxBytes: config.storage.memory.maxBytes });
  return createValkeyStore({
    ...valkeyStoreOptions(valkey),
    // Recurs on every reconnect attempt while Valkey is down; /readyz reports the outage.
    onError: (error) => logger.warn({ msg: 'valkey connection error', err: error.message }),
  });
}
