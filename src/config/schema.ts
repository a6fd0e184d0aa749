import { isIP } from 'node:net';
import { z } from 'zod';
import { isAddressAllowed } from '../net/address-policy.ts';
import { parseDuration } from './duration.ts';
import { isSecretRef, resolveSecretRef, type SecretSources } from './secrets.ts';
import { readSigningKey } from './signing-key.ts';

/** Options of {@link createConfigSchema}. */
export interface ConfigSchemaOptions {
  /**
   * `false`: secret references are checked for their form only and kept as written (`env:NAME`,
   * `file:/path`), and the rules that need their values (PEM keys, 32-byte encryption keys) are
   * skipped: `mcpgate check --no-secrets`, for a deployment's config on a machine without its
   * secrets. Default `true`.
   */
  resolveSecrets?: boolean;
}

/**
 * The configuration schema. Key names are mcpgate's public interface.
 *
 * Built per load so secret references resolve against injected sources; every problem,
 * including an unset environment variable, is reported with its path in one pass.
 */
export function createConfigSchema(sources: SecretSources, options: ConfigSchemaOptions = {}) {
  const resolveSecrets = options.resolveSecrets ?? true;
  const duration = z.string().transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: 'must be a duration such as "90s", "10m" or "30d"' });
      return z.NEVER;
    }
    return ms;
  });

  /**
   * A secret: only `env:`/`file:` references are accepted; the value is resolved at load and,
   * when `check` is given, checked there (its problem is reported with the reference, so the
   * message names the file or variable, never the value).
   */
  const secretRef = (check?: (value: string) => string | undefined) =>
    z.string().transform((ref, ctx) => {
      if (!isSecretRef(ref)) {
        ctx.addIssue({ code: 'custom', message: 'must be a secret reference (env:NAME or file:/path), never an inline value' });
        return z.NEVER;
      }
      if (!resolveSecrets) return ref;
      let value: string;
      try {
        value = resolveSecretRef(ref, sources);
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: (error as Error).message });
        return z.NEVER;
      }
      const problem = check?.(value);
      if (problem !== undefined) {
        ctx.addIssue({ code: 'custom', message: `${ref}: ${problem}` });
        return z.NEVER;
      }
      return value;
    });
  const secret = secretRef();

  /** A token-signing key: the PEM must be one the authorization server can load (the same reader). */
  const signingKey = secretRef((pem) => {
    try {
      readSigningKey(pem);
      return undefined;
    } catch (error) {
      return (error as Error).message;
    }
  });

  const httpUrl = z.string().refine((text) => {
    try {
      const url = new URL(text);
      return url.protocol === 'https:' || url.protocol === 'http:';
    } catch {
      return false;
    }
  }, 'must be an absolute http(s) URL');

  const listen = z.string().refine((text) => {
    const match = /^(.*):(\d{1,5})$/.exec(text);
    if (!match) return false;
    const host = match[1]!.replace(/^\[(.*)\]$/, '$1');
    const port = Number(match[2]);
    return port <= 65535 && host.length > 0 && (isIP(host) !== 0 || /^[A-Za-z0-9.-]+$/.test(host));
  }, 'must be host:port, e.g. "0.0.0.0:8080"');

  const cidr = z.string().refine((text) => {
    const [address, bits, extra] = text.split('/');
    if (extra !== undefined || !address) return false;
    const family = isIP(address);
    if (family === 0) return false;
    if (bits === undefined) return true;
    const n = Number(bits);
    return /^\d+$/.test(bits) && n <= (family === 4 ? 32 : 128);
  }, 'must be an IP address or CIDR range');

  const server = z.strictObject({
    listen: listen.default('127.0.0.1:8080'),
    publicUrl: httpUrl,
    devMode: z.boolean().default(false),
    trustedProxies: z.array(cidr).default([]),
    allowedOrigins: z.array(z.string()).default([]),
    maxBodyBytes: z.number().int().positive().max(64 * 1024 * 1024).default(4 * 1024 * 1024),
    /** Request-body bytes buffered at once across all requests of this process; 503 + Retry-After past it. */
    maxBodyBytesInFlight: z.number().int().positive().default(64 * 1024 * 1024),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** How long open streams may run on after SIGTERM before they are cut. */
    drainTimeout: duration.default(25_000),
    /** Upstream must send response headers within this time (504 otherwise). SSE bodies have no read timeout. */
    upstreamTimeout: duration.default(30_000),
    /** Writes an SSE comment on idle streams this often; off when absent. */
    sseKeepAlive: duration.optional(),
  });

  const idp = z.strictObject({
    issuer: httpUrl,
    clientId: z.string().min(1),
    clientSecret: secret.optional(),
    scopes: z.array(z.string().min(1)).default(['openid', 'profile', 'email', 'offline_access']),
    userClaim: z.string().min(1).default('sub'),
    authParams: z.record(z.string(), z.string()).default({}),
  });

  const authServer = z.strictObject({
    signingKeys: z.array(signingKey).default([]),
    accessTokenTtl: duration.default(600_000),
    refreshTokenTtl: duration.default(30 * 86_400_000),
    registration: z
      .strictObject({ dynamic: z.boolean().default(true), initialAccessToken: secret.nullable().default(null) })
      .default({ dynamic: true, initialAccessToken: null }),
    clientMetadataDocuments: z.boolean().default(true),
  });

  const valkeyUrl = z.string().refine((text) => {
    if (!/^(redis|rediss|valkey|valkeys):\/\//.test(text) || !URL.canParse(text)) return false;
    const url = new URL(text);
    return url.hostname !== '' && /^\/?(\d{1,2})?$/.test(url.pathname) && !url.search && !url.hash;
  }, 'must be redis://host:port/db (rediss:// for TLS; valkey:// and valkeys:// work too)');

  /** `host:port` of a Sentinel or a cluster seed node; IPv6 in brackets. */
  const hostPort = z.string().refine((text) => {
    const match = /^(?:\[([^\]]+)\]|([^:[\]\s/]+)):(\d{1,5})$/.exec(text);
    const port = Number(match?.[3]);
    return match !== null && port >= 1 && port <= 65535 && (match[1] === undefined || isIP(match[1]) === 6);
  }, 'must be host:port, e.g. "valkey-0.valkey:6379"');

  /** PEM text behind a secret reference (CA and client certificates are not secret, but live in the same mounts). */
  const pem = (what: 'CERTIFICATE' | 'PRIVATE KEY', name: string) =>
    secretRef((text) => (new RegExp(`-----BEGIN [A-Z0-9 ]*${what}-----`).test(text) ? undefined : `must hold a PEM ${name} (-----BEGIN …${what}-----)`));

  const storage = z.strictObject({
    kind: z.enum(['memory', 'valkey']).default('memory'),
    valkey: z
      .strictObject({
        /** One server. Exactly one of url, sentinel, cluster. */
        url: valkeyUrl.optional(),
        /** A master found through Sentinels (Valkey/Redis high availability). */
        sentinel: z
          .strictObject({
            masterName: z.string().min(1),
            nodes: z.array(hostPort).min(1, 'at least one Sentinel (host:port) is required'),
            username: secret.optional(),
            password: secret.optional(),
          })
          .optional(),
        /** Cluster mode: seed nodes; the others are discovered. */
        cluster: z.strictObject({ nodes: z.array(hostPort).min(1, 'at least one seed node (host:port) is required') }).optional(),
        /** TLS to every node (and every Sentinel). Present, even empty, turns TLS on. */
        tls: z
          .strictObject({
            ca: pem('CERTIFICATE', 'CA certificate').optional(),
            cert: pem('CERTIFICATE', 'client certificate').optional(),
            key: pem('PRIVATE KEY', 'private key').optional(),
            serverName: z.string().min(1).optional(),
          })
          .optional(),
        username: secret.optional(),
        password: secret.optional(),
        // A cluster picks a key's slot from its first {…}: the prefix must not contain braces.
        keyPrefix: z.string().regex(/^[^{}]*$/, 'must not contain { or }').default('mcpgate:'),
      })
      .optional(),
    encryptionKeys: z.array(z.strictObject({ id: z.string().regex(/^[A-Za-z0-9_-]{1,32}$/), key: secret })).default([]),
    /**
     * Never supported: Valkey needs `encryptionKeys` (a per-process key would make every value
     * unreadable to the other replicas and after a restart). `true` is refused with that reason;
     * `false` is accepted so existing files keep loading.
     */
    allowUnencrypted: z.boolean().optional(),
  });

  const challenge = z.enum(['auto', 'elicitation', 'tool_result', 'reauthorize']);
  const auth = z.discriminatedUnion('mode', [
    z.strictObject({ mode: z.literal('none') }),
    z.strictObject({ mode: z.literal('static'), header: z.string().regex(/^[A-Za-z0-9-]+$/).default('Authorization'), value: secret }),
    z.strictObject({ mode: z.literal('idp'), refreshMargin: duration.default(60_000) }),
    z.strictObject({ mode: z.literal('id_token') }),
    z.strictObject({
      mode: z.literal('oauth'),
      scopes: z.array(z.string().min(1)).default([]),
      challenge: challenge.default('auto'),
      clientId: z.string().min(1).optional(),
      clientSecret: secret.optional(),
      refreshMargin: duration.default(60_000),
    }),
    z.strictObject({
      mode: z.literal('token_exchange'),
      tokenEndpoint: httpUrl,
      audience: z.string().min(1),
      scopes: z.array(z.string().min(1)).default([]),
      clientId: z.string().min(1),
      clientSecret: secret.optional(),
      challenge: challenge.default('auto'),
    }),
  ]);

  const upstream = z.strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'must be lowercase letters, digits, "-" or "_" (it becomes the path /{name}/mcp)'),
    url: httpUrl,
    auth: auth.default({ mode: 'none' }),
  });

  type UpstreamShape = z.output<typeof upstream>;
  const AUTH_MODES = new Set(['none', 'static', 'idp', 'id_token', 'oauth', 'token_exchange']);

  return z
    .strictObject({
      server,
      idp: idp.optional(),
      authServer: authServer.default({
        signingKeys: [],
        accessTokenTtl: 600_000,
        refreshTokenTtl: 30 * 86_400_000,
        registration: { dynamic: true, initialAccessToken: null },
        clientMetadataDocuments: true,
      }),
      storage: storage.default({ kind: 'memory', encryptionKeys: [] }),
      upstreams: z.array(upstream).min(1, 'at least one upstream is required'),
    })
    // `when`: the cross-field rules run even when some field failed, so a file's problems are all
    // reported in one pass (collect every problem). Nothing below may assume that a field
    // passed its own validation: every access is guarded.
    .superRefine((config, ctx) => {
      const server = config.server as Partial<typeof config.server> | undefined;
      const devMode = server?.devMode === true;
      const publicUrl = typeof server?.publicUrl === 'string' && URL.canParse(server.publicUrl) ? new URL(server.publicUrl) : undefined;
      if (publicUrl && publicUrl.protocol !== 'https:' && !devMode) {
        ctx.addIssue({ code: 'custom', path: ['server', 'publicUrl'], message: 'must be an https URL (http is allowed only with devMode: true)' });
      }
      if (publicUrl && (publicUrl.search || publicUrl.hash)) {
        ctx.addIssue({ code: 'custom', path: ['server', 'publicUrl'], message: 'must not have a query or fragment' });
      }
      if (typeof server?.maxBodyBytes === 'number' && typeof server.maxBodyBytesInFlight === 'number' && server.maxBodyBytesInFlight < server.maxBodyBytes) {
        ctx.addIssue({ code: 'custom', path: ['server', 'maxBodyBytesInFlight'], message: `must be at least maxBodyBytes (${server.maxBodyBytes}), or no request of the largest size could ever pass` });
      }
      const idp = config.idp as Partial<NonNullable<typeof config.idp>> | undefined;
      if (idp && !devMode && typeof idp.issuer === 'string' && !idp.issuer.startsWith('https:')) {
        ctx.addIssue({ code: 'custom', path: ['idp', 'issuer'], message: 'must be an https URL (http is allowed only with devMode: true)' });
      }
      const seen = new Set<string>();
      (Array.isArray(config.upstreams) ? config.upstreams : []).forEach((u: Partial<UpstreamShape> | undefined, index) => {
        if (typeof u?.name === 'string') {
          if (seen.has(u.name)) ctx.addIssue({ code: 'custom', path: ['upstreams', index, 'name'], message: `duplicate upstream name "${u.name}"` });
          seen.add(u.name);
        }
        const mode = u?.auth?.mode;
        if (typeof mode === 'string' && mode !== 'none' && mode !== 'static' && AUTH_MODES.has(mode) && !idp) {
          ctx.addIssue({ code: 'custom', path: ['upstreams', index, 'auth', 'mode'], message: `mode "${mode}" needs the idp: section (users must log in)` });
        }
        const tokenEndpoint = u?.auth?.mode === 'token_exchange' ? u.auth.tokenEndpoint : undefined;
        const refusal = typeof tokenEndpoint === 'string' ? serverFetchRefusal(tokenEndpoint, devMode) : undefined;
        if (refusal) ctx.addIssue({ code: 'custom', path: ['upstreams', index, 'auth', 'tokenEndpoint'], message: refusal });
      });
      const storage = config.storage as Partial<typeof config.storage> | undefined;
      const encryptionKeys = Array.isArray(storage?.encryptionKeys) ? storage.encryptionKeys : [];
      if (storage?.kind === 'valkey') {
        if (!storage.valkey) ctx.addIssue({ code: 'custom', path: ['storage', 'valkey'], message: 'is required when kind is valkey' });
        else checkValkey(storage.valkey as Partial<NonNullable<typeof storage.valkey>>, ctx);
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
      encryptionKeys.forEach((k: Partial<(typeof encryptionKeys)[number]> | undefined, index) => {
        if (typeof k?.id === 'string') {
          if (ids.has(k.id)) ctx.addIssue({ code: 'custom', path: ['storage', 'encryptionKeys', index, 'id'], message: 'duplicate key id' });
          ids.add(k.id);
        }
        if (resolveSecrets && typeof k?.key === 'string' && Buffer.from(k.key, 'base64').length !== 32) {
          ctx.addIssue({ code: 'custom', path: ['storage', 'encryptionKeys', index, 'key'], message: 'must be 32 bytes, base64-encoded' });
        }
      });
      const signingKeys = (config.authServer as Partial<typeof config.authServer> | undefined)?.signingKeys;
      if (idp && Array.isArray(signingKeys) && signingKeys.length === 0 && !devMode) {
        ctx.addIssue({ code: 'custom', path: ['authServer', 'signingKeys'], message: 'at least one signing key is required (an ephemeral key is allowed only with devMode: true)' });
      }
      if (resolveSecrets && Array.isArray(signingKeys)) checkSigningKeySet(signingKeys, ctx);
    }, { when: () => true });
}

/**
 * Why the gateway's server-side fetcher (src/net/guarded-fetch.ts, built with `allowHttp` and
 * `allowPrivate` = devMode) would refuse every request to this URL, or `undefined`. Only what the
 * URL itself shows: a host name that resolves to a private address is found at request time.
 */
function serverFetchRefusal(text: string, devMode: boolean): string | undefined {
  if (devMode || !URL.canParse(text)) return undefined;
  const url = new URL(text);
  if (url.protocol === 'http:') return 'must be an https URL (http is allowed only with devMode: true)';
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (isIP(host) !== 0 && !isAddressAllowed(host, false)) {
    return `${host} is a loopback, private, link-local or reserved address: the gateway refuses to send tokens there outside devMode`;
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

/** The validated configuration, with defaults filled, durations in milliseconds and secrets resolved. */
export type Config = z.output<ReturnType<typeof createConfigSchema>>;
export type UpstreamConfig = Config['upstreams'][number];
export type UpstreamAuthConfig = UpstreamConfig['auth'];
export type AuthMode = UpstreamAuthConfig['mode'];
