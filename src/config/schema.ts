import { isIP } from 'node:net';
import { z } from 'zod';
import { checkCrossFieldRules } from './cross-field-rules.ts';
import { parseDuration } from './duration.ts';
import { NEVER_REDIRECT_SCHEMES, URI_SCHEME } from './redirect-schemes.ts';
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

  /** Requests per minute of one route (see src/http/route-limits.ts for the routes and defaults). */
  const routeLimit = z.strictObject({ perIp: z.number().int().positive().optional(), global: z.number().int().positive().optional() });
  const rateLimits = z.strictObject({
    authorize: routeLimit.optional(),
    authorizeResume: routeLimit.optional(),
    callback: routeLimit.optional(),
    consent: routeLimit.optional(),
    signIn: routeLimit.optional(),
    register: routeLimit.optional(),
    token: routeLimit.optional(),
    revoke: routeLimit.optional(),
    upstreamStart: routeLimit.optional(),
    upstreamCallback: routeLimit.optional(),
    connect: routeLimit.optional(),
  });

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
    /** Overrides of the per-route rate limits of unauthenticated routes (per client address and global, per minute). */
    rateLimits: rateLimits.default({}),
    /**
     * Hosts the server-side fetcher (discovery, token endpoints, metadata documents) may reach on
     * loopback, private or link-local addresses, e.g. an in-cluster token-exchange endpoint. https is still required.
     */
    allowHosts: z.array(z.string().regex(/^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*|[A-Za-z0-9.-]+)$/, 'must be a host name or IP address, without scheme or port')).default([]),
  });

  /** Extra authorization request parameters; the ones the flow's security rests on always win. */
  const authParams = z.record(z.string(), z.string()).default({});

  /** The company IdP over OpenID Connect (the default): discovery from `issuer`, identity from the ID token. */
  const idpOidc = z.strictObject({
    kind: z.literal('oidc').optional(),
    issuer: httpUrl,
    clientId: z.string().min(1),
    clientSecret: secret.optional(),
    scopes: z.array(z.string().min(1)).default(['openid', 'profile', 'email', 'offline_access']),
    userClaim: z.string().min(1).default('sub'),
    authParams,
  });

  /**
   * The company IdP over plain OAuth 2.0 (RFC 6749, e.g. GitHub): no discovery and no ID token;
   * the user is read from a user-info API with the access token.
   */
  const idpOAuth2 = z.strictObject({
    kind: z.literal('oauth2'),
    authorizationEndpoint: httpUrl,
    tokenEndpoint: httpUrl,
    userinfoEndpoint: httpUrl,
    revocationEndpoint: httpUrl.optional(),
    clientId: z.string().min(1),
    clientSecret: secret.optional(),
    tokenEndpointAuthMethod: z.enum(['client_secret_post', 'client_secret_basic']).default('client_secret_post'),
    scopes: z.array(z.string().min(1)).default([]),
    userClaim: z
      .string({ error: 'is required with kind oauth2: the member of the user-info JSON that names the user, e.g. "id" or "login"' })
      .regex(/^[^.\s]+(\.[^.\s]+)*$/, 'must be a member of the user-info JSON, or a dotted path into it ("id", "login", "data.user.id")'),
    authParams,
  });

  const idp = z.discriminatedUnion('kind', [idpOidc, idpOAuth2], {
    error: (issue) => (issue.code === 'invalid_union' ? 'kind must be "oidc" (the default: an OpenID Connect issuer) or "oauth2" (plain OAuth 2.0 with a user-info API)' : undefined),
  });

  /** A URI scheme named without its colon, compared in lower case (RFC 3986 §3.1: schemes are case-insensitive). */
  const scheme = z
    .string()
    .regex(URI_SCHEME, 'must be a URI scheme without the colon (letters, digits, "+", "-", "."; a letter first), e.g. "cursor"')
    .transform((text) => text.toLowerCase());
  const redirectSchemes = z
    .strictObject({
      /** When set, the only private-use schemes a redirect URI may use (https and loopback http stay accepted). */
      allow: z
        .array(
          scheme
            .refine((text) => !NEVER_REDIRECT_SCHEMES.includes(text), `is never accepted as a redirect scheme (${NEVER_REDIRECT_SCHEMES.join(', ')})`)
            .refine((text) => text !== 'http' && text !== 'https', 'http and https are always accepted (http on a loopback host only): list private-use schemes here'),
        )
        .optional(),
      /** Schemes refused, `http` and `https` included. */
      deny: z.array(scheme).default([]),
    })
    .superRefine((value, ctx) => {
      const both = (value.allow ?? []).filter((s) => value.deny.includes(s));
      if (both.length > 0) ctx.addIssue({ code: 'custom', path: ['deny'], message: `${both.join(', ')} cannot be both allowed and denied` });
    });

  const authServer = z.strictObject({
    signingKeys: z.array(signingKey).default([]),
    accessTokenTtl: duration.default(600_000),
    refreshTokenTtl: duration.default(30 * 86_400_000),
    /** Absolute lifetime of a session from its login, whatever the refreshes: then the user signs in again. */
    sessionMaxLifetime: duration.default(7 * 86_400_000),
    /** Most live sessions per user; a new login past it ends the user's oldest session. */
    maxSessionsPerUser: z.number().int().positive().max(10_000).default(20),
    registration: z
      .strictObject({
        dynamic: z.boolean().default(true),
        initialAccessToken: secret.nullable().default(null),
        /** How long a registration lives until its first use (a sign-in at the IdP for it). */
        unusedTtl: duration.default(600_000),
        /** Most registrations not used yet, across the fleet; past it new ones are refused. */
        maxUnused: z.number().int().positive().default(1000),
        redirectSchemes: redirectSchemes.default({ deny: [] }),
      })
      .default({ dynamic: true, initialAccessToken: null, unusedTtl: 600_000, maxUnused: 1000, redirectSchemes: { deny: [] } }),
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
    /** The memory store's bound on the bytes of keys and values it holds (`kind: memory`). */
    memory: z.strictObject({ maxBytes: z.number().int().min(1024 * 1024).default(256 * 1024 * 1024) }).default({ maxBytes: 256 * 1024 * 1024 }),
    encryptionKeys: z.array(z.strictObject({ id: z.string().regex(/^[A-Za-z0-9_-]{1,32}$/), key: secret })).default([]),
    /**
     * Never supported: Valkey needs `encryptionKeys` (a per-process key would make every value
     * unreadable to the other replicas and after a restart). `true` is refused with that reason;
     * `false` is accepted so existing files keep loading.
     */
    allowUnencrypted: z.boolean().optional(),
  });

  const log = z.strictObject({
    /**
     * Who the access log names on MCP requests: `claim` (default) the claim `idp.userClaim` names
     * (what the gateway knows the user by; `sub` when no other claim is configured), `sub` the
     * IdP's `sub` claim (opaque, stable), `none` nobody.
     */
    user: z.enum(['none', 'sub', 'claim']).default('claim'),
  });

  const challenge = z.enum(['auto', 'elicitation', 'tool_result', 'reauthorize']);
  /** RFC 3986 absolute URI without a fragment (RFC 8707 §2 `resource`). */
  const absoluteUri = z.string().refine((text) => /^[A-Za-z][A-Za-z0-9+.-]*:/.test(text) && URL.canParse(text) && !text.includes('#'), 'must be an absolute URI without a fragment');
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
      /** The authorization server `clientId` belongs to: required with it; discovery naming another is refused. */
      issuer: httpUrl.optional(),
      refreshMargin: duration.default(60_000),
    }),
    z.strictObject({
      mode: z.literal('token_exchange'),
      tokenEndpoint: httpUrl,
      /** Which of the session's IdP tokens is the subject token (RFC 8693 §2.1 `subject_token_type`). */
      subjectToken: z.enum(['access_token', 'id_token']).default('access_token'),
      audience: z.string().min(1).optional(),
      /** RFC 8693 §2.1 `resource`: absolute URIs of the services the token is for. */
      resource: z
        .union([absoluteUri, z.array(absoluteUri).min(1)])
        .transform((value) => (Array.isArray(value) ? value : [value]))
        .optional(),
      scopes: z.array(z.string().min(1)).default([]),
      /** Extra form parameters of the exchange request (e.g. Dex's `connector_id`). */
      extraParams: z.record(z.string().min(1), z.string()).default({}),
      /** The `iss` the exchanged token must carry when it is a JWT. */
      expectedIssuer: z.string().min(1).optional(),
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

  return z
    .strictObject({
      server,
      idp: idp.optional(),
      authServer: authServer.default({
        signingKeys: [],
        accessTokenTtl: 600_000,
        refreshTokenTtl: 30 * 86_400_000,
        sessionMaxLifetime: 7 * 86_400_000,
        maxSessionsPerUser: 20,
        registration: { dynamic: true, initialAccessToken: null, unusedTtl: 600_000, maxUnused: 1000, redirectSchemes: { deny: [] } },
        clientMetadataDocuments: true,
      }),
      storage: storage.default({ kind: 'memory', memory: { maxBytes: 256 * 1024 * 1024 }, encryptionKeys: [], allowUnencrypted: false }),
      log: log.default({ user: 'claim' }),
      upstreams: z.array(upstream).min(1, 'at least one upstream is required'),
      /** Optional OpenTelemetry traces: absent, nothing is traced and nothing is sent. */
      observability: z
        .strictObject({
          otlp: z
            .strictObject({
              /** The OTLP/HTTP collector's base URL; spans are POSTed to `{endpoint}/v1/traces` as JSON. */
              endpoint: httpUrl,
              serviceName: z.string().min(1).default('mcpgate'),
            })
            .optional(),
        })
        .optional(),
    })
    // `when`: the cross-field rules run even when some field failed, so a file's problems are all
    // reported in one pass (collect every problem).
    .superRefine((config, ctx) => checkCrossFieldRules(config, { resolveSecrets }, ctx), { when: () => true });
}

/** The validated configuration, with defaults filled, durations in milliseconds and secrets resolved. */
export type Config = z.output<ReturnType<typeof createConfigSchema>>;
/** The `idp:` section, either kind. */
export type IdpConfig = NonNullable<Config['idp']>;
/** `idp:` with `kind: oidc` (the default, so `kind` may be absent). */
export type OidcIdpConfig = Exclude<IdpConfig, { kind: 'oauth2' }>;
/** `idp:` with `kind: oauth2`. */
export type OAuth2IdpConfig = Extract<IdpConfig, { kind: 'oauth2' }>;
export type UpstreamConfig = Config['upstreams'][number];
export type UpstreamAuthConfig = UpstreamConfig['auth'];
export type AuthMode = UpstreamAuthConfig['mode'];
