/**
 * The configuration's cross-field rules: what no single key's schema can say (https outside
 * devMode, an idp: section for the modes that need users to log in, unique names and key ids,
 * the key set as a whole).
 *
 * They run even when some field failed its own validation, so a file's problems are all reported
 * in one pass: nothing here may assume that a field passed, and every access is guarded (the
 * shapes below are what the rules read, each field `unknown`).
 */
import { isIP } from 'node:net';
import type { z } from 'zod';
import { hostAllowList, isAddressAllowed } from '../net/address-policy.ts';
import { readSigningKey } from './signing-key.ts';

/** The configuration as the rules see it: any section may be missing or malformed. */
export interface ConfigFields {
  server?: unknown;
  idp?: unknown;
  authServer?: unknown;
  storage?: unknown;
  upstreams?: unknown;
  observability?: unknown;
}

interface ServerFields {
  publicUrl?: unknown;
  devMode?: unknown;
  maxBodyBytes?: unknown;
  maxBodyBytesInFlight?: unknown;
  allowHosts?: unknown;
}

interface UpstreamFields {
  name?: unknown;
  url?: unknown;
  auth?: {
    mode?: unknown;
    issuer?: unknown;
    clientId?: unknown;
    clientSecret?: unknown;
    tokenEndpoint?: unknown;
    subjectToken?: unknown;
    audience?: unknown;
    resource?: unknown;
    extraParams?: unknown;
  };
}

interface StorageFields {
  kind?: unknown;
  valkey?: unknown;
  encryptionKeys?: unknown;
  allowUnencrypted?: unknown;
}

/** What the upstream rules need to know about the rest of the file. */
interface UpstreamContext {
  devMode: boolean;
  /** Whether `server.allowHosts` lists a host (the guarded fetcher's own comparison). */
  isListed: (host: string) => boolean;
  /** An idp: section is present (users log in). */
  hasIdp: boolean;
  /** A plain OAuth 2.0 IdP issues no ID token: nothing could be forwarded or exchanged. */
  withoutIdToken: boolean;
}

const AUTH_MODES = new Set(['none', 'static', 'idp', 'id_token', 'oauth', 'token_exchange']);

const HTTPS_OUTSIDE_DEV_MODE = 'must be an https URL (http is allowed only with devMode: true)';

/**
 * Reports every cross-field problem of `config` on `ctx`, in the order of the file's sections.
 * `resolveSecrets: false` skips the rules that need secret values (key sizes, the signing keys).
 */
export function checkCrossFieldRules(config: ConfigFields, options: { resolveSecrets: boolean }, ctx: z.RefinementCtx): void {
  const server = config.server as ServerFields | undefined;
  const devMode = server?.devMode === true;
  const publicUrl = typeof server?.publicUrl === 'string' && URL.canParse(server.publicUrl) ? new URL(server.publicUrl) : undefined;
  checkPlainHttp(publicUrl, config.observability, devMode, ctx);
  checkServer(server, publicUrl, ctx);
  const idp = config.idp as { kind?: unknown } | undefined;
  if (idp && !devMode) checkIdpEndpoints(idp, ctx);
  const allowHosts = Array.isArray(server?.allowHosts) ? server.allowHosts.filter((h): h is string => typeof h === 'string') : [];
  const isListed = hostAllowList(allowHosts);
  checkUpstreams(config.upstreams, { devMode, isListed, hasIdp: Boolean(idp), withoutIdToken: idp?.kind === 'oauth2' }, ctx);
  checkStorage(config.storage as StorageFields | undefined, options.resolveSecrets, ctx);
  checkSigningKeys(config.authServer, { hasIdp: Boolean(idp), devMode, resolveSecrets: options.resolveSecrets }, ctx);
}

/** The public URL and the trace collector are https outside devMode. */
function checkPlainHttp(publicUrl: URL | undefined, observability: unknown, devMode: boolean, ctx: z.RefinementCtx): void {
  if (publicUrl && publicUrl.protocol !== 'https:' && !devMode) {
    ctx.addIssue({ code: 'custom', path: ['server', 'publicUrl'], message: HTTPS_OUTSIDE_DEV_MODE });
  }
  const otlpEndpoint = (observability as { otlp?: { endpoint?: unknown } } | undefined)?.otlp?.endpoint;
  if (typeof otlpEndpoint === 'string' && otlpEndpoint.startsWith('http:') && !devMode) {
    ctx.addIssue({ code: 'custom', path: ['observability', 'otlp', 'endpoint'], message: HTTPS_OUTSIDE_DEV_MODE });
  }
}

/** The public URL is a bare origin and path; the in-flight body budget holds at least one largest body. */
function checkServer(server: ServerFields | undefined, publicUrl: URL | undefined, ctx: z.RefinementCtx): void {
  if (publicUrl && (publicUrl.search || publicUrl.hash)) {
    ctx.addIssue({ code: 'custom', path: ['server', 'publicUrl'], message: 'must not have a query or fragment' });
  }
  if (typeof server?.maxBodyBytes === 'number' && typeof server.maxBodyBytesInFlight === 'number' && server.maxBodyBytesInFlight < server.maxBodyBytes) {
    ctx.addIssue({ code: 'custom', path: ['server', 'maxBodyBytesInFlight'], message: `must be at least maxBodyBytes (${server.maxBodyBytes}), or no request of the largest size could ever pass` });
  }
}

/** The IdP's endpoints are https (called outside devMode only). */
function checkIdpEndpoints(idp: object, ctx: z.RefinementCtx): void {
  for (const key of ['issuer', 'authorizationEndpoint', 'tokenEndpoint', 'userinfoEndpoint', 'revocationEndpoint'] as const) {
    const value = (idp as Record<string, unknown>)[key];
    if (typeof value === 'string' && !value.startsWith('https:')) {
      ctx.addIssue({ code: 'custom', path: ['idp', key], message: HTTPS_OUTSIDE_DEV_MODE });
    }
  }
}

/** Upstream names are unique; then each upstream's own rules. */
function checkUpstreams(upstreams: unknown, context: UpstreamContext, ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  (Array.isArray(upstreams) ? upstreams : []).forEach((u: UpstreamFields | undefined, index) => {
    if (typeof u?.name === 'string') {
      if (seen.has(u.name)) ctx.addIssue({ code: 'custom', path: ['upstreams', index, 'name'], message: `duplicate upstream name "${u.name}"` });
      seen.add(u.name);
    }
    checkUpstream(u, ['upstreams', index], context, ctx);
  });
}

/** One upstream's mode against the rest of the file: the client it may use, the URLs it fetches, the IdP it needs. */
function checkUpstream(u: UpstreamFields | undefined, path: (string | number)[], context: UpstreamContext, ctx: z.RefinementCtx): void {
  const { devMode, hasIdp, withoutIdToken } = context;
  const mode = u?.auth?.mode;
  if (mode === 'oauth') checkOAuthClient(u!.auth!, [...path, 'auth'], devMode, ctx);
  // The server-side fetcher speaks https only outside devMode: an http endpoint cannot work.
  // (A token_exchange tokenEndpoint is checked by its own schema.)
  // Mode oauth discovers the upstream's authorization server from the upstream's own origin.
  if (mode === 'oauth' && !devMode && typeof u!.url === 'string' && u!.url.startsWith('http:')) {
    ctx.addIssue({ code: 'custom', path: [...path, 'url'], message: 'must be an https URL (the gateway fetches it server-side; http is allowed only with devMode: true)' });
  }
  if (typeof mode === 'string' && mode !== 'none' && mode !== 'static' && AUTH_MODES.has(mode) && !hasIdp) {
    ctx.addIssue({ code: 'custom', path: [...path, 'auth', 'mode'], message: `mode "${mode}" needs the idp: section (users must log in)` });
  }
  if (withoutIdToken && mode === 'id_token') {
    ctx.addIssue({ code: 'custom', path: [...path, 'auth', 'mode'], message: 'mode "id_token" needs an OpenID Connect IdP: idp.kind oauth2 issues no ID token (use mode idp or token_exchange)' });
  }
  const auth = u?.auth;
  if (mode === 'token_exchange' && auth) checkTokenExchange(auth, [...path, 'auth'], { withoutIdToken, devMode }, ctx);
  const tokenEndpoint = mode === 'token_exchange' ? u?.auth?.tokenEndpoint : undefined;
  const refusal = typeof tokenEndpoint === 'string' ? serverFetchRefusal(tokenEndpoint, devMode, context.isListed) : undefined;
  if (refusal) ctx.addIssue({ code: 'custom', path: [...path, 'auth', 'tokenEndpoint'], message: refusal });
}

/**
 * A preconfigured client of an `oauth` upstream (and its secret) goes only to the server that
 * issued it, never to whatever server a (possibly compromised) upstream's metadata names.
 */
function checkOAuthClient(auth: { issuer?: unknown; clientId?: unknown; clientSecret?: unknown }, path: (string | number)[], devMode: boolean, ctx: z.RefinementCtx): void {
  if (auth.clientId !== undefined && auth.issuer === undefined) {
    ctx.addIssue({ code: 'custom', path: [...path, 'issuer'], message: 'is required with clientId: the issuer of the authorization server that issued the client' });
  }
  if (auth.clientSecret !== undefined && auth.clientId === undefined) {
    ctx.addIssue({ code: 'custom', path: [...path, 'clientId'], message: 'is required with clientSecret' });
  }
  if (typeof auth.issuer === 'string' && !devMode && !auth.issuer.startsWith('https:')) {
    ctx.addIssue({ code: 'custom', path: [...path, 'issuer'], message: HTTPS_OUTSIDE_DEV_MODE });
  }
}

/** Valkey needs its section and encryption keys; values are always sealed; key ids are unique and keys 32 bytes. */
function checkStorage(storage: StorageFields | undefined, resolveSecrets: boolean, ctx: z.RefinementCtx): void {
  const encryptionKeys: Array<{ id?: unknown; key?: unknown } | undefined> = Array.isArray(storage?.encryptionKeys) ? storage.encryptionKeys : [];
  if (storage?.kind === 'valkey') {
    if (!storage.valkey) ctx.addIssue({ code: 'custom', path: ['storage', 'valkey'], message: 'is required when kind is valkey' });
    else checkValkey(storage.valkey as Parameters<typeof checkValkey>[0], ctx);
    if (encryptionKeys.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['storage', 'encryptionKeys'], message: 'is required with valkey (tokens are sealed at rest; `mcpgate keys generate` prints a key)' });
    }
  }
  if (storage?.allowUnencrypted === true) {
    ctx.addIssue({
      code: 'custom',
      path: ['storage', 'allowUnencrypted'],
      message: 'is not supported: values are always sealed (with valkey, list storage.encryptionKeys; `mcpgate keys generate` prints a key); remove this key',
    });
  }
  const ids = new Set<string>();
  encryptionKeys.forEach((k: { id?: unknown; key?: unknown } | undefined, index) => {
    if (typeof k?.id === 'string') {
      if (ids.has(k.id)) ctx.addIssue({ code: 'custom', path: ['storage', 'encryptionKeys', index, 'id'], message: 'duplicate key id' });
      ids.add(k.id);
    }
    if (resolveSecrets && typeof k?.key === 'string' && Buffer.from(k.key, 'base64').length !== 32) {
      ctx.addIssue({ code: 'custom', path: ['storage', 'encryptionKeys', index, 'key'], message: 'must be 32 bytes, base64-encoded' });
    }
  });
}

/** With an IdP, tokens are signed: a key is required outside devMode, and the set must hold together. */
function checkSigningKeys(authServer: unknown, context: { hasIdp: boolean; devMode: boolean; resolveSecrets: boolean }, ctx: z.RefinementCtx): void {
  const signingKeys = (authServer as { signingKeys?: unknown } | undefined)?.signingKeys;
  if (context.hasIdp && Array.isArray(signingKeys) && signingKeys.length === 0 && !context.devMode) {
    ctx.addIssue({ code: 'custom', path: ['authServer', 'signingKeys'], message: 'at least one signing key is required (an ephemeral key is allowed only with devMode: true)' });
  }
  if (context.resolveSecrets && Array.isArray(signingKeys)) checkSigningKeySet(signingKeys, ctx);
}

/**
 * RFC 8693 §2.1 parameters mcpgate sets itself: `extraParams` may not replace them (a subject
 * token or grant type from the config would undo what the mode is for).
 */
const EXCHANGE_PARAMS = new Set([
  'grant_type', 'subject_token', 'subject_token_type', 'requested_token_type', 'actor_token', 'actor_token_type',
  'audience', 'resource', 'scope', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type',
]);

/** Cross-field rules of a `token_exchange` upstream; every access is guarded. */
function checkTokenExchange(
  auth: { tokenEndpoint?: unknown; subjectToken?: unknown; audience?: unknown; resource?: unknown; extraParams?: unknown },
  path: (string | number)[],
  context: { withoutIdToken: boolean; devMode: boolean },
  ctx: z.RefinementCtx,
): void {
  if (context.withoutIdToken && auth.subjectToken === 'id_token') {
    ctx.addIssue({ code: 'custom', path: [...path, 'subjectToken'], message: 'must be access_token: idp.kind oauth2 issues no ID token' });
  }
  if (auth.audience === undefined && auth.resource === undefined) {
    ctx.addIssue({ code: 'custom', path, message: 'needs audience or resource (or both): the token the exchange issues must be bound to the upstream' });
  }
  if (typeof auth.extraParams === 'object' && auth.extraParams !== null) {
    for (const name of Object.keys(auth.extraParams)) {
      if (EXCHANGE_PARAMS.has(name)) {
        ctx.addIssue({ code: 'custom', path: [...path, 'extraParams', name], message: `is set by mcpgate (use the mode's own keys: subjectToken, audience, resource, scopes, clientId, clientSecret)` });
      }
    }
  }
}

/**
 * Why the gateway's server-side fetcher (src/net/guarded-fetch.ts, built with `allowHttp` and
 * `allowPrivate` = devMode and `allowHosts` = `server.allowHosts`) would refuse every request to
 * this URL, or `undefined`. Only what the URL itself shows: a host name that resolves to a private
 * address is found at request time. A listed host may be internal, as the fetcher allows it.
 */
function serverFetchRefusal(text: string, devMode: boolean, isListed: (host: string) => boolean): string | undefined {
  if (devMode || !URL.canParse(text)) return undefined;
  const url = new URL(text);
  if (url.protocol === 'http:') return 'must be an https URL (http is allowed only with devMode: true)';
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (isIP(host) !== 0 && !isAddressAllowed(host, isListed(host))) {
    return isListed(host)
      ? `${host} is an unspecified, multicast or reserved address: the gateway never sends tokens there, even on server.allowHosts`
      : `${host} is a loopback, private, link-local or reserved address: the gateway refuses to send tokens there outside devMode unless server.allowHosts lists it`;
  }
  return undefined;
}

/**
 * The rules over the whole key set that the authorization server applies when it loads them:
 * the first key signs, so it must be a private key; a key listed twice is a mistake.
 */
function checkSigningKeySet(pems: unknown[], ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  pems.forEach((pem, index) => {
    if (typeof pem !== 'string') return;
    let key;
    try {
      key = readSigningKey(pem);
    } catch {
      return; // reported by the entry itself
    }
    const path = ['authServer', 'signingKeys', index];
    if (index === 0 && !key.privateKey) ctx.addIssue({ code: 'custom', path, message: 'the first key signs, so it must be a private key' });
    const id = JSON.stringify(key.publicKey.export({ format: 'jwk' }));
    if (seen.has(id)) ctx.addIssue({ code: 'custom', path, message: 'the same key is listed twice' });
    seen.add(id);
  });
}

/** Cross-field rules of `storage.valkey`; every access is guarded (the fields may have failed on their own). */
function checkValkey(valkey: { url?: unknown; sentinel?: unknown; cluster?: unknown; tls?: unknown }, ctx: z.RefinementCtx): void {
  const path = ['storage', 'valkey'];
  const modes = (['url', 'sentinel', 'cluster'] as const).filter((m) => valkey[m] !== undefined);
  if (modes.length === 0) {
    ctx.addIssue({ code: 'custom', path, message: 'needs one of url (one server), sentinel (masterName and nodes) or cluster (nodes)' });
  } else if (modes.length > 1) {
    ctx.addIssue({ code: 'custom', path, message: `url, sentinel and cluster are alternatives: set exactly one (found ${modes.join(', ')})` });
  }
  const tls = valkey.tls as { cert?: unknown; key?: unknown } | undefined;
  if (tls && (tls.cert === undefined) !== (tls.key === undefined)) {
    ctx.addIssue({ code: 'custom', path: [...path, 'tls'], message: 'cert and key go together (a client certificate needs its private key)' });
  }
  if (tls && typeof valkey.url === 'string' && /^(redis|valkey):/.test(valkey.url)) {
    ctx.addIssue({ code: 'custom', path: [...path, 'url'], message: 'is a plain-text URL but tls: is set; use rediss:// (or remove tls:)' });
  }
}
