/**
 * The domain stores of the upstream OAuth client, written once above the storage
 * port so every backend gets the same single-use state, indexes and sealing.
 *
 * Keys (braces are Valkey hash tags: one session's keys share a cluster slot):
 * - `uflow:<flowId>`                        UpstreamFlow, sealed (PKCE verifier, client secret)
 * - `ustate:<sha256(state)>`                the flowId; taken atomically by the callback (single use)
 * - `upending:{<sid>}:<upstream>`           the flowId of the session's pending flow for an upstream
 * - `utoken:{<sid>}:<upstream>`             UpstreamToken, sealed
 * - `utokens:{<sid>}`                       set of upstream names with a token (logout, /connections)
 * - `udcr:<sha256(our iss, their iss, redirect URI, scopes)>`  DcrRegistration, sealed
 * - `udcrs:<sha256(our iss, their iss)>`    set of the `udcr:` ids at one issuer (RFC 7592 deregistration, invalid_client)
 *
 * One token row per (session, upstream): the row records the issuer, resource and granted scopes
 * it was issued for, and a step-up replaces it with the larger grant. The row is never handed to
 * another upstream: RFC 8707 binds the token to this upstream's URL, so even two upstreams behind
 * the same authorization server get tokens of their own.
 */
import { hash } from 'node:crypto';
import type { Store } from '../store/port.ts';
import type { Sealer } from '../store/sealed.ts';
import type { DcrRegistration, UpstreamFlow, UpstreamToken } from './records.ts';

/** Options of {@link createUpstreamStores}. */
export interface UpstreamStoresOptions {
  store: Store;
  /** Seals flows, tokens and registrations (they hold verifiers, tokens and client secrets). */
  sealer: Sealer;
  /**
   * How long an upstream token row lives, in milliseconds: as long as a session can
   * (`authServer.refreshTokenTtl`), not as long as an access token. Default 30 days.
   */
  tokenTtlMs?: number;
  /** How long a DCR registration without `client_secret_expires_at` is reused, in milliseconds. Default 30 days. */
  registrationTtlMs?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
}

/** What a DCR registration is cached by. */
export interface RegistrationKey {
  /** Our issuer (the public URL). */
  ourIssuer: string;
  /** The upstream authorization server's issuer. */
  issuer: string;
  redirectUri: string;
  scopes: readonly string[];
}

/** The upstream OAuth stores. Every method throws `StoreUnavailableError` on I/O failure. */
export interface UpstreamStores {
  flows: {
    /** Saves a new flow and its state index until `flow.expiresAt`. */
    put(flow: UpstreamFlow): Promise<void>;
    get(flowId: string): Promise<UpstreamFlow | undefined>;
    /** The flow an authorization response's `state` belongs to, without consuming it. */
    byState(state: string): Promise<UpstreamFlow | undefined>;
    /** Consumes the flow (atomic take of its state): true for exactly one caller, ever. */
    take(flow: UpstreamFlow): Promise<boolean>;
    /** The session's pending flow for an upstream, if one is still open. */
    pending(sessionId: string, upstream: string): Promise<UpstreamFlow | undefined>;
    /**
     * Makes `flow` the pending one of its (session, upstream): only if there is none, or, with
     * `replacing`, only if that flow is still the pending one. False when another caller won.
     */
    claimPending(flow: UpstreamFlow, replacing?: string): Promise<boolean>;
  };
  tokens: {
    get(sessionId: string, upstream: string): Promise<UpstreamToken | undefined>;
    put(sessionId: string, token: UpstreamToken): Promise<void>;
    /**
     * The row with its `version`: the stored (sealed) bytes, as the port sees them. Sealing uses a
     * fresh IV, so two writes of the same row have different versions.
     */
    read(sessionId: string, upstream: string): Promise<{ token: UpstreamToken; version: string } | undefined>;
    /**
     * Replaces the row only while it is still `version` (compare-and-set): a refresh never
     * overwrites a row someone else replaced meanwhile. True when it was replaced.
     */
    replace(sessionId: string, token: UpstreamToken, version: string): Promise<boolean>;
    /** Removes the row only while it is still `version` (compare-and-delete). True when it was removed. */
    takeIf(sessionId: string, upstream: string, version: string): Promise<boolean>;
    /** Removes the row and returns what it held (for revocation at the upstream). */
    take(sessionId: string, upstream: string): Promise<UpstreamToken | undefined>;
    /** The upstreams the session holds a token for. */
    list(sessionId: string): Promise<string[]>;
    /** Removes every upstream token of a session (logout) and returns them, for revocation. */
    forgetSession(sessionId: string): Promise<UpstreamToken[]>;
  };
  registrations: {
    get(key: RegistrationKey): Promise<DcrRegistration | undefined>;
    /** Caches until `client_secret_expires_at` (less a minute) or `registrationTtlMs`. */
    put(key: RegistrationKey, registration: DcrRegistration): Promise<void>;
    /** Every cached registration at an issuer (one per scope set), with the id {@link forget} takes. */
    atIssuer(ourIssuer: string, issuer: string): Promise<Array<{ id: string; registration: DcrRegistration }>>;
    /**
     * Drops a cached registration, only while it still holds `clientId` (compare-and-delete): a
     * registration another replica made meanwhile survives. True when it was dropped.
     */
    forget(ourIssuer: string, issuer: string, id: string, clientId: string): Promise<boolean>;
  };
}

const DAY_MS = 86_400_000;
/** A secret about to expire is not worth caching: register again instead. */
const SECRET_EXPIRY_MARGIN_MS = 60_000;

function sha256(text: string): string {
  return hash('sha256', text, 'base64url');
}

/** Builds the upstream OAuth stores over one storage port; see the module comment for keys. */
export function createUpstreamStores(options: UpstreamStoresOptions): UpstreamStores {
  const { store, sealer } = options;
  const now = options.now ?? Date.now;
  const tokenTtlMs = positive(options.tokenTtlMs ?? 30 * DAY_MS, 'tokenTtlMs');
  const registrationTtlMs = positive(options.registrationTtlMs ?? 30 * DAY_MS, 'registrationTtlMs');
  const backing: Backing = { store, sealer, now };
  return { flows: flowStore(backing), tokens: tokenStore(backing, tokenTtlMs), registrations: registrationStore(backing, registrationTtlMs) };
}

/** What the three stores share: the storage port, the sealer of their records, and the clock. */
interface Backing {
  store: Store;
  sealer: Sealer;
  now: () => number;
}

/** The store keys; see the module comment. */
const keys = {
  flow: (flowId: string) => `uflow:${flowId}`,
  state: (state: string) => `ustate:${sha256(state)}`,
  pending: (sid: string, upstream: string) => `upending:{${sid}}:${upstream}`,
  token: (sid: string, upstream: string) => `utoken:{${sid}}:${upstream}`,
  tokens: (sid: string) => `utokens:{${sid}}`,
  registration: (k: RegistrationKey) => `udcr:${registrationId(k)}`,
  registrationById: (id: string) => `udcr:${id}`,
  issuerRegistrations: (ourIssuer: string, issuer: string) => `udcrs:${sha256(JSON.stringify([ourIssuer, issuer]))}`,
};

async function readSealed<T>({ store, sealer }: Backing, key: string): Promise<T | undefined> {
  const text = await store.get(key);
  return text === undefined ? undefined : (JSON.parse(sealer.open(key, text)) as T);
}

async function writeSealed({ store, sealer }: Backing, key: string, value: unknown, ttlMs: number): Promise<void> {
  await store.set(key, sealer.seal(key, JSON.stringify(value)), ttlMs);
}

/** Milliseconds from now until `deadline`. @throws RangeError when it has passed. */
function ttlUntil(now: () => number, deadline: number): number {
  const ttl = Math.ceil(deadline - now());
  if (ttl <= 0) throw new RangeError('the record has already expired');
  return ttl;
}

/** Pending flows, their single-use state index, and each (session, upstream)'s pending one. */
function flowStore(backing: Backing): UpstreamStores['flows'] {
  const { store, now } = backing;
  return {
    async put(flow) {
      const ttl = ttlUntil(now, flow.expiresAt);
      await writeSealed(backing, keys.flow(flow.flowId), flow, ttl);
      await store.set(keys.state(flow.state), flow.flowId, ttl);
    },
    get(flowId) {
      return readSealed<UpstreamFlow>(backing, keys.flow(flowId));
    },
    async byState(state) {
      const flowId = await store.get(keys.state(state));
      return flowId === undefined ? undefined : readSealed<UpstreamFlow>(backing, keys.flow(flowId));
    },
    async take(flow) {
      // The state index is the single-use token: GETDEL hands it to one caller only.
      const flowId = await store.take(keys.state(flow.state));
      if (flowId !== flow.flowId) return false;
      await store.delete(keys.flow(flow.flowId));
      const pendingKey = keys.pending(flow.sessionId, flow.upstream);
      if ((await store.get(pendingKey)) === flow.flowId) await store.delete(pendingKey);
      return true;
    },
    async pending(sessionId, upstream) {
      const flowId = await store.get(keys.pending(sessionId, upstream));
      if (flowId === undefined) return undefined;
      const flow = await readSealed<UpstreamFlow>(backing, keys.flow(flowId));
      return flow && flow.expiresAt > now() ? flow : undefined;
    },
    async claimPending(flow, replacing) {
      const key = keys.pending(flow.sessionId, flow.upstream);
      const ttl = ttlUntil(now, flow.expiresAt);
      return replacing === undefined
        ? store.setIfAbsent(key, flow.flowId, ttl)
        : store.compareAndSet(key, replacing, flow.flowId, ttl);
    },
  };
}

/** One token row per (session, upstream), and each session's index of them. Rows live `tokenTtlMs`. */
function tokenStore(backing: Backing, tokenTtlMs: number): UpstreamStores['tokens'] {
  const { store, sealer } = backing;
  const tokens: UpstreamStores['tokens'] = {
    get(sessionId, upstream) {
      return readSealed<UpstreamToken>(backing, keys.token(sessionId, upstream));
    },
    async put(sessionId, token) {
      // Index first: a row missing from the index would survive logout.
      await store.addMembers(keys.tokens(sessionId), [token.upstream], tokenTtlMs);
      await writeSealed(backing, keys.token(sessionId, token.upstream), token, tokenTtlMs);
    },
    async read(sessionId, upstream) {
      const key = keys.token(sessionId, upstream);
      const version = await store.get(key);
      return version === undefined ? undefined : { token: JSON.parse(sealer.open(key, version)) as UpstreamToken, version };
    },
    async replace(sessionId, token, version) {
      const key = keys.token(sessionId, token.upstream);
      await store.addMembers(keys.tokens(sessionId), [token.upstream], tokenTtlMs);
      return store.compareAndSet(key, version, sealer.seal(key, JSON.stringify(token)), tokenTtlMs);
    },
    async takeIf(sessionId, upstream, version) {
      if (!(await store.deleteIfEquals(keys.token(sessionId, upstream), version))) return false;
      await store.removeMembers(keys.tokens(sessionId), [upstream]);
      return true;
    },
    async take(sessionId, upstream) {
      const key = keys.token(sessionId, upstream);
      const text = await store.take(key);
      await store.removeMembers(keys.tokens(sessionId), [upstream]);
      return text === undefined ? undefined : (JSON.parse(sealer.open(key, text)) as UpstreamToken);
    },
    async list(sessionId) {
      const names = await store.members(keys.tokens(sessionId));
      const present: string[] = [];
      for (const name of names) if ((await store.get(keys.token(sessionId, name))) !== undefined) present.push(name);
      return present.sort();
    },
    async forgetSession(sessionId) {
      const removed: UpstreamToken[] = [];
      for (const name of await store.members(keys.tokens(sessionId))) {
        const token = await tokens.take(sessionId, name);
        if (token) removed.push(token);
      }
      await store.delete(keys.tokens(sessionId));
      return removed;
    },
  };
  return tokens;
}

/** Cached DCR registrations, and each issuer's index of them. Kept at most `registrationTtlMs`. */
function registrationStore(backing: Backing, registrationTtlMs: number): UpstreamStores['registrations'] {
  const { store, sealer, now } = backing;
  return {
    get(key) {
      return readSealed<DcrRegistration>(backing, keys.registration(key));
    },
    async put(key, registration) {
      const ttl = registration.secretExpiresAt === undefined
        ? registrationTtlMs
        : Math.min(registrationTtlMs, registration.secretExpiresAt - SECRET_EXPIRY_MARGIN_MS - now());
      if (ttl <= 0) return; // expires too soon to be worth reusing
      // Index first: a registration missing from it could never be deregistered.
      await store.addMembers(keys.issuerRegistrations(key.ourIssuer, key.issuer), [registrationId(key)], registrationTtlMs);
      await writeSealed(backing, keys.registration(key), registration, ttl);
    },
    async atIssuer(ourIssuer, issuer) {
      const found: Array<{ id: string; registration: DcrRegistration }> = [];
      for (const id of await store.members(keys.issuerRegistrations(ourIssuer, issuer))) {
        const registration = await readSealed<DcrRegistration>(backing, keys.registrationById(id));
        if (registration) found.push({ id, registration });
      }
      return found;
    },
    async forget(ourIssuer, issuer, id, clientId) {
      const key = keys.registrationById(id);
      const sealed = await store.get(key);
      let dropped = false;
      if (sealed !== undefined && (JSON.parse(sealer.open(key, sealed)) as DcrRegistration).clientId === clientId) {
        dropped = await store.deleteIfEquals(key, sealed);
      }
      if (dropped || sealed === undefined) await store.removeMembers(keys.issuerRegistrations(ourIssuer, issuer), [id]);
      return dropped;
    },
  };
}

/** The id of a registration's cache entry. */
function registrationId(k: RegistrationKey): string {
  return sha256(JSON.stringify([k.ourIssuer, k.issuer, k.redirectUri, sha256([...new Set(k.scopes)].sort().join(' '))]));
}

function positive(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`upstream stores: ${name} must be a positive integer of milliseconds`);
  return value;
}
