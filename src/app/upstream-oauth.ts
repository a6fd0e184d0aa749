/**
 * Upstream OAuth: upstreams with their own authorization server, and each session's connection
 * to them (discovery, client registration there, the flows and their stored grants).
 */
import type { GuardedFetch } from '../net/guarded-fetch.ts';
import { createClientRegistration, type ClientRegistration } from '../upstream-oauth/client-registration.ts';
import { createDiscovery } from '../upstream-oauth/discovery.ts';
import { createUpstreamFlows, type OAuthUpstream, type UpstreamFlows } from '../upstream-oauth/flow.ts';
import { createUpstreamStores, type UpstreamStores } from '../upstream-oauth/stores.ts';
import type { AppBasics } from './basics.ts';
import type { Storage } from './storage.ts';

/** The parts of upstream OAuth the login, the credentials and the routes use. */
export interface UpstreamOAuth {
  stores: UpstreamStores;
  registration: ClientRegistration;
  flows: UpstreamFlows;
  /** The upstreams in mode `oauth`. */
  upstreams: OAuthUpstream[];
}

/** Builds the flows of the upstreams in mode `oauth` (harmless when there are none). */
export function assembleUpstreamOAuth(options: { basics: AppBasics; storage: Storage; serverFetch: GuardedFetch }): UpstreamOAuth {
  const { config, issuer, now, metrics, logger, tracer } = options.basics;
  const { store, sealer, singleFlight } = options.storage;
  const serverFetch = options.serverFetch;
  const stores = createUpstreamStores({ store, sealer, tokenTtlMs: config.authServer.refreshTokenTtl, now });
  const registration = createClientRegistration({ fetch: serverFetch, stores, publicUrl: issuer, now, singleFlight });
  const flows = createUpstreamFlows({
    stores,
    discovery: createDiscovery({ fetch: serverFetch, allowHttp: config.server.devMode, now }),
    registration,
    fetch: serverFetch,
    publicUrl: issuer,
    now,
    metrics,
    singleFlight,
    logger,
    tracer,
  });
  const upstreams: OAuthUpstream[] = config.upstreams.flatMap((u) =>
    u.auth.mode === 'oauth'
      ? [{ name: u.name, url: u.url, scopes: u.auth.scopes, clientId: u.auth.clientId, clientSecret: u.auth.clientSecret, issuer: u.auth.issuer }]
      : [],
  );
  return { stores, registration, flows, upstreams };
}
