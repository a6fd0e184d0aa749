/**
 * How the endpoints find a client by its id: a registration (DCR) or a client ID metadata
 * document (CIMD).
 */
import { InvalidClient } from '../../http/errors.ts';
import type { AuthStores, ClientRecord } from '../records/records.ts';
import type { CimdResolver } from './cimd.ts';

/** Finds a client by id. @throws InvalidClient when a metadata document cannot be used (the reason is safe to show). */
export type ClientLookup = (clientId: string, signal?: AbortSignal) => Promise<ClientRecord | undefined>;

/**
 * The client lookup of the authorize and token endpoints: an http(s) URL is a metadata document
 * (when CIMD is on; otherwise such a client is unknown), anything else a registration.
 */
export function createClientLookup(options: { stores: Pick<AuthStores, 'clients'>; cimd: CimdResolver | undefined }): ClientLookup {
  return async (clientId, signal) => {
    if (/^https?:\/\//i.test(clientId)) {
      if (!options.cimd) throw new InvalidClient('client metadata documents are not accepted here; register the client first');
      return options.cimd.resolve(clientId, signal);
    }
    return registeredClient(options.stores, clientId);
  };
}

/**
 * The client lookup of the token and revocation endpoints: like {@link createClientLookup}, but a
 * metadata document is only read from what an authorization request stored, never fetched, so
 * these endpoints cannot make the gateway fetch a URL (an unknown one is an unknown client).
 */
export function createKnownClientLookup(options: { stores: Pick<AuthStores, 'clients'>; cimd: CimdResolver | undefined }): ClientLookup {
  return async (clientId, signal) => {
    if (/^https?:\/\//i.test(clientId)) return options.cimd?.known(clientId, signal);
    return registeredClient(options.stores, clientId);
  };
}

async function registeredClient(stores: Pick<AuthStores, 'clients'>, clientId: string): Promise<ClientRecord | undefined> {
  const client = await stores.clients.get(clientId);
  // A record that claims to be a document but is stored under a plain id is not one of ours.
  return client?.kind === 'dcr' ? client : undefined;
}
