/**
 * An MCP server with its OWN authorization server, the way SaaS MCP servers come:
 * a real OpenID provider (`oidc-provider`) that is not the company IdP, and a real SDK MCP server
 * that trusts only it. mcpgate connects each user to it through the upstream OAuth flow.
 *
 * The authorization server:
 * - registers mcpgate one of three ways (`registration`): open dynamic registration (RFC 7591),
 *   Client ID Metadata Documents (oidc-provider's `clientIdMetadataDocument`, draft-02), or a
 *   preconfigured confidential client;
 * - issues JWT access tokens for the MCP server's URL only (RFC 8707 resource indicator), with a
 *   configurable short lifetime, refresh tokens, and RFC 7009 revocation that it records;
 * - has its own users (login by name) and its own consent page with Approve and Deny.
 *
 * The MCP server verifies those JWTs itself (jose, remote JWKS, issuer, audience), answers 401
 * with `WWW-Authenticate: Bearer resource_metadata=…` and 403 `insufficient_scope` for the
 * `write_note` tool without `notes:write`, serves its RFC 9728 metadata naming the authorization
 * server, and records every `Authorization` header it saw. An `initialize` opens a session (SSE,
 * GET streams); other requests without a session are answered statelessly.
 *
 * Run it alone with `node demo/upstream-as.ts [dcr|cimd|preconfigured]`.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createRemoteJWKSet, exportJWK, generateKeyPair, jwtVerify, type JWTPayload } from 'jose';
import Provider, { errors, type InteractionDetails } from 'oidc-provider';
import { createMemoryAdapter, readAll, replayBody } from './oidc-plumbing.ts';
import { z } from 'zod';

/** How mcpgate gets a client at the upstream's authorization server. */
export type UpstreamRegistration = 'dcr' | 'cimd' | 'preconfigured';

/** Options of {@link startUpstreamWithAs}. */
export interface UpstreamWithAsOptions {
  registration: UpstreamRegistration;
  /** Lifetime of access tokens, in seconds. Default 300. */
  accessTokenTtlSeconds?: number;
  /** The upstream's own users (login by name, no password: this is a test double of a SaaS). Default `alice-up`, `bob-up`. */
  users?: string[];
  /** Redirect URIs of the preconfigured client. Any loopback `…/oauth/upstream/callback` is accepted too. */
  redirectUris?: string[];
  /**
   * Where a client ID metadata document URL is really fetched from. CIMD client ids must be
   * https; a test gateway publishes `https://gw.test/…` and serves it on loopback http.
   * Default: the URL itself.
   */
  resolveClientIdUrl?: (url: string) => string;
  /** Consent: `prompt` shows Approve/Deny (default); `auto` approves. */
  consent?: 'prompt' | 'auto';
  /** Let `initialize` and notifications through without a token (the MCP server still needs one for everything else). Default false. */
  openHandshake?: boolean;
}

/** A revocation request the authorization server received (RFC 7009). The token itself is kept only as a digest. */
export interface RecordedRevocation {
  tokenTypeHint: string | undefined;
  tokenSha256: string;
}

/** A request the authorization server received. */
export interface RecordedAsRequest {
  method: string;
  /** Path and query. */
  url: string;
  authorization: string | undefined;
  /** The form body of a token or revocation request. */
  body?: string;
}

/** A running upstream (MCP server + its own authorization server). */
export interface UpstreamWithAs {
  /** The authorization server's issuer, `http://127.0.0.1:<port>`. */
  issuer: string;
  /** The MCP endpoint, `http://127.0.0.1:<port>/mcp`. */
  mcpUrl: string;
  /** Its RFC 9728 metadata URL. */
  resourceMetadataUrl: string;
  /** The preconfigured client (registration `preconfigured` only). */
  client?: { clientId: string; clientSecret: string };
  users: string[];
  /** Every `Authorization` header the MCP server received, in order (undefined: none sent). */
  seenAuthorization: (string | undefined)[];
  /** The `sub` of every request the MCP server accepted, in order. */
  acceptedSubjects: string[];
  revocations: RecordedRevocation[];
  /** Every request the authorization server received (the form body of token and revocation requests too), in order. */
  asRequests: RecordedAsRequest[];
  /** Successful dynamic registrations. */
  registrations(): number;
  /** Whether the server still knows a (dynamically registered) client. */
  knowsClient(clientId: string): Promise<boolean>;
  /** Deletes a client at the server, behind its owner's back (as an administrator or an expiry would). */
  deleteClient(clientId: string): Promise<void>;
  /** Client ID metadata documents fetched. */
  metadataFetches(): number;
  /** Refresh-token grants answered successfully. */
  refreshCount(): number;
  /** Refresh-token grants the provider refused with `invalid_grant` (a replayed rotated token: the grant is revoked). */
  refreshRejections(): number;
  /** Makes the MCP server answer 401 `invalid_token` to every access token it has accepted so far (as after a key rotation). */
  rejectIssuedTokens(): void;
  /** Makes refresh-token grants fail (`invalid_grant`, or `down`: HTTP 503) until called with `null`. */
  failRefresh(kind: 'invalid_grant' | 'down' | null): void;
  /** Awaits `hook` before answering each refresh-token grant (to line something up with the moment it is granted), until called with `null`. */
  beforeRefreshGrant(hook: (() => Promise<void>) | null): void;
  /** SHA-256 (hex) of a token, to compare with `revocations`. */
  digest(token: string): string;
  close(): Promise<void>;
}

const SCOPES = ['notes:read', 'notes:write'];
const LOOPBACK_CALLBACK = /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(\/[^?#]*)?\/oauth\/upstream\/callback$/;

/** Starts the authorization server and the MCP server, each on its own 127.0.0.1 port. */
export async function startUpstreamWithAs(options: UpstreamWithAsOptions): Promise<UpstreamWithAs> {
  const users = options.users ?? ['alice-up', 'bob-up'];
  const ttl = options.accessTokenTtlSeconds ?? 300;
  const seenAuthorization: (string | undefined)[] = [];
  const acceptedSubjects: string[] = [];
  const revocations: RecordedRevocation[] = [];
  const asRequests: RecordedAsRequest[] = [];
  let registrations = 0;
  let metadataFetches = 0;
  let refreshes = 0;
  let refreshRejections = 0;
  let refreshFailure: 'invalid_grant' | 'down' | null = null;
  let beforeRefresh: (() => Promise<void>) | null = null;
  const acceptedJtis = new Set<string>();
  const deniedJtis = new Set<string>();

  const asServer = await listening();
  const mcpServer = await listening();
  const issuer = `http://127.0.0.1:${asServer.port}`;
  const mcpUrl = `http://127.0.0.1:${mcpServer.port}/mcp`;
  const resourceMetadataUrl = `http://127.0.0.1:${mcpServer.port}/.well-known/oauth-protected-resource/mcp`;
  const client = options.registration === 'preconfigured'
    ? { clientId: 'mcpgate-at-upstream', clientSecret: randomBytes(24).toString('base64url') }
    : undefined;

  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const Adapter = createMemoryAdapter();
  const provider = new Provider(issuer, {
    clients: client
      ? [{
          client_id: client.clientId,
          client_secret: client.clientSecret,
          redirect_uris: options.redirectUris ?? ['http://127.0.0.1/oauth/upstream/callback'],
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          token_endpoint_auth_method: 'client_secret_basic',
        }]
      : [],
    jwks: { keys: [{ ...(await exportJWK(privateKey)), alg: 'ES256', use: 'sig', kid: 'upstream-as-1' }] },
    adapter: Adapter,
    // Cookies ignore ports: on 127.0.0.1 the default names would clobber another provider's (the company IdP's).
    cookies: { keys: [randomBytes(32).toString('base64url')], names: { session: 'upstream_as_session', interaction: 'upstream_as_interaction', resume: 'upstream_as_interaction_resume' } },
    // Its one signing key is ES256; clients that never asked for ID tokens still get a default alg.
    clientDefaults: { grant_types: ['authorization_code'], response_types: ['code'], id_token_signed_response_alg: 'ES256', token_endpoint_auth_method: 'client_secret_basic' },
    scopes: [...SCOPES, 'offline_access'],
    findAccount: (_ctx: unknown, sub: string) => (users.includes(sub) ? { accountId: sub, claims: () => ({ sub }) } : undefined),
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      registration: { enabled: options.registration === 'dcr' },
      // RFC 7592: clients it registers get a registration access token and URI (read, update, delete).
      registrationManagement: { enabled: options.registration === 'dcr' },
      clientIdMetadataDocument: { enabled: options.registration === 'cimd', ack: 'draft-02' },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => mcpUrl,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => {
          if (resource !== mcpUrl) throw new errors.InvalidTarget!();
          return { scope: SCOPES.join(' '), audience: mcpUrl, accessTokenFormat: 'jwt', accessTokenTTL: ttl, jwt: { sign: { alg: 'ES256' } } };
        },
      },
    },
    // CIMD client ids are https URLs; a test gateway serves its document on loopback http.
    // oidc-provider's own SSRF dispatcher would refuse loopback, so it is replaced here.
    fetch: (url: string | URL, init: RequestInit & { dispatcher?: unknown }) => {
      metadataFetches++;
      const target = options.resolveClientIdUrl?.(String(url)) ?? String(url);
      const { dispatcher: _dispatcher, ...rest } = init;
      return globalThis.fetch(target, rest);
    },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    // A plain OAuth server (not OpenID): refresh tokens for every client allowed the grant.
    issueRefreshToken: async (_ctx: unknown, c: { grantTypeAllowed(type: string): boolean }) => c.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    ttl: { AccessToken: ttl, AuthorizationCode: 60, Interaction: 600, Session: 86_400, Grant: 86_400, RefreshToken: 86_400 },
    pkce: { required: () => true },
    renderError: (ctx: { type: string; body: string }, out: Record<string, string>) => {
      ctx.type = 'html';
      ctx.body = page('Upstream authorization error', `<p>${escapeHtml(out['error'] ?? 'error')}: ${escapeHtml(out['error_description'] ?? '')}</p>`);
    },
  });
  const redirectUriAllowed = provider.Client.prototype.redirectUriAllowed;
  provider.Client.prototype.redirectUriAllowed = function allowed(this: unknown, value: string) {
    return redirectUriAllowed.call(this, value) || (client !== undefined && LOOPBACK_CALLBACK.test(value));
  };
  provider.on('registration_create.success', () => void registrations++);
  provider.on('grant.success', (ctx) => {
    if (ctx.oidc.params?.['grant_type'] === 'refresh_token') refreshes++;
  });
  provider.on('grant.error', (ctx, error) => {
    if (ctx.oidc.params?.['grant_type'] === 'refresh_token' && (error as { error?: string }).error === 'invalid_grant') refreshRejections++;
  });
  const providerCallback = provider.callback();

  asServer.handle = async (req, res) => {
    const url = new URL(req.url ?? '/', issuer);
    const recorded: RecordedAsRequest = { method: req.method ?? 'GET', url: req.url ?? '/', authorization: req.headers.authorization };
    asRequests.push(recorded);
    const interaction = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|approve|deny))?$/.exec(url.pathname);
    if (interaction) return handleInteraction(req, res, interaction[2]);
    if (req.method === 'POST' && (url.pathname === '/token' || url.pathname === '/token/revocation')) {
      const body = await readAll(req);
      recorded.body = body.toString('utf8');
      const form = new URLSearchParams(recorded.body);
      if (url.pathname === '/token/revocation') {
        revocations.push({ tokenTypeHint: form.get('token_type_hint') ?? undefined, tokenSha256: digest(form.get('token') ?? '') });
      } else if (form.get('grant_type') === 'refresh_token' && refreshFailure !== null) {
        if (refreshFailure === 'invalid_grant') return json(res, 400, { error: 'invalid_grant', error_description: 'grant request is invalid' });
        res.writeHead(503, { 'content-type': 'text/html' }).end('<!doctype html><title>503</title>');
        return;
      } else if (form.get('grant_type') === 'refresh_token' && beforeRefresh !== null) {
        await beforeRefresh();
      }
      replayBody(req, body);
    }
    providerCallback(req, res);
  };

  async function handleInteraction(req: IncomingMessage, res: ServerResponse, action: string | undefined): Promise<void> {
    let details: InteractionDetails;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      return sendHtml(res, 400, page('Expired', '<p>This authorization request has expired.</p>'));
    }
    const uid = escapeHtml(details.uid);
    if (details.prompt.name === 'login') {
      if (action !== 'login' || req.method !== 'POST') {
        return sendHtml(res, 200, page('Sign in to the upstream service', `<form method="post" action="/interaction/${uid}/login">
<label>User <input name="login" required autofocus></label> <button type="submit">Sign in</button></form>`));
      }
      const login = new URLSearchParams((await readAll(req)).toString('utf8')).get('login') ?? '';
      if (!users.includes(login)) return sendHtml(res, 401, page('Unknown user', '<p>No such user.</p>'));
      return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    }
    if (details.prompt.name !== 'consent') return sendHtml(res, 400, page('Unsupported', '<p>Unsupported prompt.</p>'));
    if (action === 'deny' && req.method === 'POST') {
      return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the user denied access' }, { mergeWithLastSubmission: false });
    }
    const missing = (details.prompt.details['missingResourceScopes'] as Record<string, string[]> | undefined) ?? {};
    if (action !== 'approve' && (options.consent ?? 'prompt') === 'prompt') {
      const scopes = Object.values(missing).flat();
      return sendHtml(res, 200, page('Allow access?', `<p>The application <strong>${escapeHtml(String(details.params['client_id']))}</strong> asks for:</p>
<ul>${scopes.map((s) => `<li>${escapeHtml(s)}</li>`).join('')}</ul>
<form method="post" action="/interaction/${uid}/approve"><button type="submit" name="decision" value="approve">Approve</button></form>
<form method="post" action="/interaction/${uid}/deny"><button type="submit" name="decision" value="deny">Deny</button></form>`));
    }
    const accountId = details.session?.accountId;
    if (!accountId) return sendHtml(res, 400, page('No session', '<p>Sign in first.</p>'));
    const grant = (details.grantId ? await provider.Grant.find(details.grantId) : undefined)
      ?? new provider.Grant({ accountId, clientId: String(details.params['client_id']) });
    for (const [indicator, granted] of Object.entries(missing)) grant.addResourceScope(indicator, granted.join(' '));
    const oidcScopes = (details.prompt.details['missingOIDCScope'] as string[] | undefined) ?? [];
    if (oidcScopes.length > 0) grant.addOIDCScope(oidcScopes.join(' '));
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }

  // The MCP server: trusts only this authorization server's JWTs, for its own URL.
  const jwks = createRemoteJWKSet(new URL(`${issuer}/jwks`));
  const challenge = (extra: string) => `Bearer resource_metadata="${resourceMetadataUrl}", scope="notes:read"${extra}`;
  const sessions = new Map<string, StreamableHTTPServerTransport>();

  function newServer(): McpServer {
    const server = new McpServer({ name: 'upstream-with-own-as', version: '1.0.0' });
    const subjectOf = (extra: { authInfo?: AuthInfo }) => String(extra.authInfo?.extra?.['sub']);
    server.registerTool('whoami', { description: 'The upstream account the token belongs to' }, async (extra) => ({
      content: [{ type: 'text', text: `upstream user ${subjectOf(extra)}` }],
    }));
    server.registerTool('write_note', { description: 'Needs notes:write', inputSchema: { text: z.string() } }, async ({ text }, extra) => ({
      content: [{ type: 'text', text: `saved "${text}" for ${subjectOf(extra)}` }],
    }));
    return server;
  }

  mcpServer.handle = async (req, res) => {
    const url = new URL(req.url ?? '/', mcpUrl);
    if (url.pathname === '/.well-known/oauth-protected-resource/mcp' || url.pathname === '/.well-known/oauth-protected-resource') {
      return json(res, 200, { resource: mcpUrl, authorization_servers: [issuer], scopes_supported: SCOPES, bearer_methods_supported: ['header'] });
    }
    if (url.pathname !== '/mcp') return void res.writeHead(404).end();
    seenAuthorization.push(req.headers.authorization);
    const body = req.method === 'POST' ? JSON.parse((await readAll(req)).toString('utf8') || 'null') : undefined;
    // `openHandshake`: initialize and notifications need no token (some servers work this way).
    const handshake = options.openHandshake === true && req.method === 'POST' && (body?.method === 'initialize' || (body !== null && body?.id === undefined));
    const match = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(req.headers.authorization ?? '');
    if (!handshake || match) {
      let claims: JWTPayload;
      try {
        if (!match) throw new Error('no token');
        ({ payload: claims } = await jwtVerify(match[1]!, jwks, { issuer, audience: mcpUrl, typ: 'at+jwt' }));
        if (deniedJtis.has(String(claims.jti))) throw new Error('denied');
      } catch {
        res.writeHead(401, { 'www-authenticate': challenge(match ? ', error="invalid_token"' : ''), 'content-type': 'application/json' });
        return void res.end('{"error":"invalid_token"}');
      }
      const granted = String(claims['scope'] ?? '').split(' ');
      if (body?.method === 'tools/call' && body.params?.name === 'write_note' && !granted.includes('notes:write')) {
        res.writeHead(403, {
          'www-authenticate': `Bearer error="insufficient_scope", scope="notes:read notes:write", resource_metadata="${resourceMetadataUrl}"`,
          'content-type': 'application/json',
        });
        return void res.end('{"error":"insufficient_scope"}');
      }
      acceptedSubjects.push(String(claims.sub));
      acceptedJtis.add(String(claims.jti));
      (req as IncomingMessage & { auth?: AuthInfo }).auth = { token: match[1]!, clientId: String(claims['client_id']), scopes: granted, extra: { sub: claims.sub } };
    }

    const sessionId = req.headers['mcp-session-id'];
    if (typeof sessionId === 'string') {
      const transport = sessions.get(sessionId);
      if (!transport) return json(res, 404, { jsonrpc: '2.0', id: null, error: { code: -32001, message: 'session not found' } });
      return transport.handleRequest(req, res, body ?? undefined);
    }
    // An initialize opens a session (SSE streams, GET); anything else is answered statelessly.
    const stateful = body?.method === 'initialize';
    const transport = new StreamableHTTPServerTransport(
      stateful
        ? { sessionIdGenerator: () => randomUUID(), onsessioninitialized: (id) => void sessions.set(id, transport) }
        : { sessionIdGenerator: undefined, enableJsonResponse: true },
    );
    const server = newServer();
    if (!stateful) res.once('close', () => void transport.close().then(() => server.close()));
    await server.connect(transport);
    await transport.handleRequest(req, res, body ?? undefined);
  };

  return {
    issuer,
    mcpUrl,
    resourceMetadataUrl,
    client,
    users,
    seenAuthorization,
    acceptedSubjects,
    revocations,
    asRequests,
    registrations: () => registrations,
    knowsClient: async (clientId) => (await new Adapter('Client').find(clientId)) !== undefined,
    deleteClient: (clientId) => new Adapter('Client').destroy(clientId),
    metadataFetches: () => metadataFetches,
    refreshCount: () => refreshes,
    refreshRejections: () => refreshRejections,
    rejectIssuedTokens() {
      for (const jti of acceptedJtis) deniedJtis.add(jti);
    },
    failRefresh(kind) {
      refreshFailure = kind;
    },
    beforeRefreshGrant(hook) {
      beforeRefresh = hook;
    },
    digest,
    async close() {
      await Promise.all([...sessions.values()].map((t) => t.close().catch(() => undefined)));
      await Promise.all([asServer.close(), mcpServer.close()]);
    },
  };
}

function digest(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

interface Listening {
  port: number;
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
  close(): Promise<void>;
}

/** A loopback server whose handler is set after the port is known (issuers and URLs contain it). */
async function listening(): Promise<Listening> {
  const sockets = new Set<Socket>();
  const state: Listening = {
    port: 0,
    handle: async (_req, res) => void res.writeHead(503).end(),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
  const server: Server = createServer((req, res) => {
    state.handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`upstream test server error: ${(error as Error).message}`);
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as { port: number }).port;
  return state;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

function sendHtml(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'x-frame-options': 'DENY' });
  res.end(html);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

if (import.meta.main) {
  const registration = (process.argv[2] ?? 'dcr') as UpstreamRegistration;
  const upstream = await startUpstreamWithAs({ registration });
  console.log(`MCP server with its own authorization server (${registration})`);
  console.log(`  MCP endpoint:         ${upstream.mcpUrl}`);
  console.log(`  authorization server: ${upstream.issuer}`);
  if (upstream.client) console.log(`  client: ${upstream.client.clientId} / ${upstream.client.clientSecret}`);
  console.log(`  users: ${upstream.users.join(', ')} (no password)`);
  const stop = () => void upstream.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
