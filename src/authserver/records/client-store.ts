/**
 * Registered clients (`client:<client_id>`, holding only a secret's hash) and the fleet-wide
 * count of registrations not used yet (`registrations:unused:<window>`).
 */
import type { AuthStores, ClientRecord } from './records.ts';
import { CAS_ATTEMPTS, storeKeys, type SealedRecords } from './sealed-records.ts';

/** Builds the client store. */
export function createClientStore(records: SealedRecords): AuthStores['clients'] {
  const { store, seal, read } = records;
  return {
    async get(clientId) {
      const client = await read<ClientRecord>(storeKeys.client(clientId));
      return client?.clientId === clientId ? client : undefined;
    },
    async put(client, ttlMs) {
      const key = storeKeys.client(client.clientId);
      await store.set(key, seal(key, client), ttlMs);
    },
    admitUnused: (budget) => admitUnused(records, budget),
  };
}

/**
 * `clients.admitUnused`. The count is not sealed: a number that grants nothing; forging it can
 * only refuse registrations.
 */
async function admitUnused(records: SealedRecords, { max, windowMs }: { max: number; windowMs: number }): Promise<{ admitted: boolean; retryAfterMs: number }> {
  const { store } = records;
  const at = records.now();
  const window = Math.floor(at / windowMs);
  const retryAfterMs = (window + 1) * windowMs - at;
  // Fixed windows, counted by compare-and-set so every replica shares one count; kept for
  // two windows because the next window reads this one as its previous.
  const key = `registrations:unused:${window}`;
  const previous = Number((await store.get(`registrations:unused:${window - 1}`)) ?? 0);
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const text = await store.get(key);
    const count = Number(text ?? 0);
    if (count + previous >= max) return { admitted: false, retryAfterMs };
    if (await store.compareAndSet(key, text, String(count + 1), 2 * windowMs + 1000)) return { admitted: true, retryAfterMs: 0 };
  }
  // Contention this high means a flood: refusing is the safe side of a budget.
  return { admitted: false, retryAfterMs: 1000 };
}
