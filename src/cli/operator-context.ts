/**
 * What operators' commands (`mcpgate sessions …`, `mcpgate upstreams deregister …`) work with:
 * the configured Valkey store — the one every replica serves from — opened with the same key
 * prefix and encryption keys, and the domain stores and session-ending path above it, built as
 * the gateway builds them. Changes made here are seen by every replica on its next request.
 */
import { createSessionEnding } from '../authserver/records/session-end.ts';
import { createAuthStores } from '../authserver/records/stores.ts';
import type { AuthStores } from '../authserver/records/records.ts';
import type { Config } from '../config/schema.ts';
import { createGuardedFetch, type GuardedFetch } from '../net/guarded-fetch.ts';
import { createLogger } from '../observability/logger.ts';
import type { Store } from '../store/port.ts';
import { createSealer } from '../store/sealed.ts';
import { createValkeyStore } from '../store/valkey.ts';
import { valkeyStoreOptions } from '../store/valkey_settings.ts';
import { createClientRegistration, type ClientRegistration } from '../upstream-oauth/client-registration.ts';
import { createDiscovery, type Discovery } from '../upstream-oauth/discovery.ts';
import { createUpstreamFlows, type UpstreamFlows } from '../upstream-oauth/flow.ts';
import { createUpstreamStores, type UpstreamStores } from '../upstream-oauth/stores.ts';

/** The stores and services of an operator's command. */
export interface OperatorContext {
  config: Config;
  store: Store;
  authStores: AuthStores;
  upstreamStores: UpstreamStores;
  flows: UpstreamFlows;
  discovery: Discovery;
  registration: ClientRegistration;
  /** Our issuer (the public URL without a trailing slash). */
  issuer: string;
  /**
   * Ends a session as the gateway does (record and IdP tokens first, then every upstream grant
   * forgotten and revoked at its authorization server); resolves with the upstream counts.
   */
  endSession(sessionId: string): Promise<{ forgotten: number; revoked: number }>;
  close(): Promise<void>;
}

/** Refused before anything is opened: the command cannot reach what the gateway holds. */
export class OperatorStoreError extends Error {
  override name = 'OperatorStoreError';
}

/**
 * Opens the configured store. Memory storage lives inside the gateway process, out of any other
 * process's reach: refused with a message that says so.
 */
export function openOperatorContext(config: Config): OperatorContext {
  const valkey = config.storage.valkey;
  if (config.storage.kind !== 'valkey' || valkey === undefined) {
    throw new OperatorStoreError(
      'storage.kind is memory: sessions and registrations live inside the gateway process, which no other process can reach; ' +
        'these commands need storage.kind: valkey (restarting a memory-storage gateway ends every session)',
    );
  }
  if (config.storage.encryptionKeys.length === 0) throw new OperatorStoreError('storage.encryptionKeys is empty: the stored values cannot be opened');
  const store = createValkeyStore(valkeyStoreOptions(valkey));
  const sealer = createSealer({ keys: config.storage.encryptionKeys.map((k) => ({ id: k.id, key: Buffer.from(k.key, 'base64') })) });
  const publicUrl = new URL(config.server.publicUrl);
  const issuer = `${publicUrl.origin}${publicUrl.pathname.replace(/\/+$/, '')}`;
  const authStores = createAuthStores({ store, sealer });
  const upstreamStores = createUpstreamStores({ store, sealer, tokenTtlMs: config.authServer.refreshTokenTtl });
  const fetch: GuardedFetch = createGuardedFetch({ allowHttp: config.server.devMode, allowPrivate: config.server.devMode });
  const discovery = createDiscovery({ fetch, allowHttp: config.server.devMode });
  const registration = createClientRegistration({ fetch, stores: upstreamStores, publicUrl: issuer });
  const flows = createUpstreamFlows({ stores: upstreamStores, discovery, registration, fetch, publicUrl: issuer });
  // Clean-up failures are reported by the command itself, not logged.
  const logger = createLogger({ level: 'silent' });
  let counts = { forgotten: 0, revoked: 0 };
  const end = createSessionEnding({
    sessions: authStores.sessions,
    onSessionEnded: [
      async (sid) => {
        counts = await flows.forgetSession(sid);
      },
    ],
    logger,
  });
  return {
    config,
    store,
    authStores,
    upstreamStores,
    flows,
    discovery,
    registration,
    issuer,
    async endSession(sessionId) {
      counts = { forgotten: 0, revoked: 0 };
      await end(sessionId);
      return counts;
    },
    async close() {
      await store.close().catch(() => undefined);
      await fetch.close().catch(() => undefined);
    },
  };
}
