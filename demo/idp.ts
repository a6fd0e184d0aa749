/**
 * A development IdP: a real OpenID provider (`oidc-provider`) on loopback, standing in for the
 * company IdP in `npm run demo` and in the tests. It has a fixed confidential client for
 * mcpgate, a few users with passwords, a plain login form (no JavaScript, so a headless browser
 * fills it like a person would), and no consent screen of its own: consent is mcpgate's job.
 *
 * Access tokens are JWTs for one audience (RFC 8707 resource indicator, defaulted), so an
 * upstream MCP server can verify them itself against the provider's JWKS. Refresh tokens are
 * issued for `offline_access`. `failRefresh` and `stop`/`start` simulate a broken or absent IdP.
 *
 * Run it alone with `node demo/idp.ts [port]`: it prints its issuer, client and users.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { errors, type InteractionDetails } from 'oidc-provider';
import { createMemoryAdapter, readAll, replayBody } from './oidc-plumbing.ts';

/** A user of the development IdP. `sub` is the subject the IdP asserts (default: the login). */
export interface DevIdpUser {
  login: string;
  password: string;
  sub: string;
  email: string;
  /** The `email_verified` claim. */
  emailVerified: boolean;
  name: string;
}

/** Options of {@link startDevIdp}. */
export interface DevIdpOptions {
  /** Port on 127.0.0.1; default 0 (any free port). */
  port?: number;
  /** Lifetime of access tokens, in seconds. Default 300. */
  accessTokenTtlSeconds?: number;
  /** Lifetime of refresh tokens, in seconds. Default 86 400. */
  refreshTokenTtlSeconds?: number;
  /** Users; default alice and bob with generated passwords. `sub`, `email`, `name` are derived when absent. */
  users?: Array<{ login: string; password: string; sub?: string; email?: string; emailVerified?: boolean; name?: string }>;
  /** The `aud` of access tokens (and the only resource indicator accepted). Default `urn:mcpgate:dev-upstream`. */
  audience?: string;
  /** Redirect URIs registered for the mcpgate client. Any `http://127.0.0.1|localhost|[::1]:*\/oauth/callback` is accepted too. */
  redirectUris?: string[];
  /** Rotate refresh tokens on every use (as Okta and Auth0 do). Default true. */
  rotateRefreshTokens?: boolean;
}

/** How the refresh grant fails: `invalid_grant` (the grant is dead), `down` (HTTP 503), or not at all (`null`). */
export type RefreshFailure = 'invalid_grant' | 'down' | null;

/** A running development IdP. */
export interface DevIdp {
  /** `http://127.0.0.1:<port>` */
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The `aud` of the access tokens it issues. */
  audience: string;
  /** The JWKS URL, for upstreams that verify the IdP's access tokens themselves. */
  jwksUri: string;
  users: DevIdpUser[];
  /** Makes refresh-token grants fail until called again with `null`. */
  failRefresh(kind: RefreshFailure): void;
  /** Awaits `hook` before answering each refresh-token grant (to line something up with the moment it is granted), until called with `null`. */
  beforeRefreshGrant(hook: (() => Promise<void>) | null): void;
  /** Refresh-token grants answered successfully so far. */
  refreshCount(): number;
  /** Refresh-token grants the provider refused with `invalid_grant` (a replayed rotated token: the grant is revoked). */
  refreshRejections(): number;
  /** Stops answering (connections refused) without forgetting sessions or grants. */
  stop(): Promise<void>;
  /** Answers again on the same port. */
  start(): Promise<void>;
  /** Stops for good. */
  close(): Promise<void>;
}

const LOOPBACK_CALLBACK = /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?\/oauth\/callback$/;

/** Starts a development IdP on 127.0.0.1. */
export async function startDevIdp(options: DevIdpOptions = {}): Promise<DevIdp> {
  const users: DevIdpUser[] = (options.users ?? [
    { login: 'alice', password: randomBytes(6).toString('base64url') },
    { login: 'bob', password: randomBytes(6).toString('base64url') },
  ]).map((u) => ({
    login: u.login,
    password: u.password,
    sub: u.sub ?? u.login,
    email: u.email ?? `${u.login}@example.test`,
    emailVerified: u.emailVerified ?? true,
    name: u.name ?? u.login[0]!.toUpperCase() + u.login.slice(1),
  }));
  const audience = options.audience ?? 'urn:mcpgate:dev-upstream';
  const clientId = 'mcpgate';
  const clientSecret = randomBytes(24).toString('base64url');
  let refreshFailure: RefreshFailure = null;
  let beforeRefresh: (() => Promise<void>) | null = null;
  let refreshes = 0;
  let refreshRejections = 0;

  // Listen first: the provider needs its issuer (with the port) when it is constructed.
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.writeHead(503).end();
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => handler(req, res));
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const port = await listen(server, options.port ?? 0);
  const issuer = `http://127.0.0.1:${port}`;

  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const provider = new Provider(issuer, {
    adapter: createMemoryAdapter(),
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: options.redirectUris ?? ['http://127.0.0.1/oauth/callback'],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    jwks: { keys: [{ ...(await exportJWK(privateKey)), alg: 'RS256', use: 'sig', kid: 'dev-idp-1' }] },
    // Cookies ignore ports: on 127.0.0.1 the default names would clobber another provider's (the upstreams' own).
    cookies: { keys: [randomBytes(32).toString('base64url')], names: { session: 'dev_idp_session', interaction: 'dev_idp_interaction', resume: 'dev_idp_interaction_resume' } },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'] },
    // Put profile and email claims into the ID token, so `userClaim: email` works without userinfo.
    conformIdTokenClaims: false,
    findAccount: (_ctx: unknown, sub: string) => {
      const user = users.find((u) => u.sub === sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        claims: () => ({ sub, email: user.email, email_verified: user.emailVerified, name: user.name, preferred_username: user.login }),
      };
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        // The refresh grant keeps issuing tokens for the resource granted at login.
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => {
          if (resource !== audience) throw new errors.InvalidTarget!();
          return { scope: 'mcp', audience, accessTokenFormat: 'jwt', accessTokenTTL: options.accessTokenTtlSeconds ?? 300, jwt: { sign: { alg: 'RS256' } } };
        },
      },
    },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    issueRefreshToken: async (_ctx: unknown, client: { grantTypeAllowed(type: string): boolean }, code: { scopes: Set<string> }) =>
      client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    rotateRefreshToken: () => options.rotateRefreshTokens ?? true,
    ttl: {
      AccessToken: options.accessTokenTtlSeconds ?? 300,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 86_400,
      Grant: 86_400 * 14,
      RefreshToken: options.refreshTokenTtlSeconds ?? 86_400,
    },
    pkce: { required: () => true },
    // Errors rendered by the provider stay terse; the default page echoes parameters.
    renderError: (ctx: { type: string; body: string }, out: Record<string, string>) => {
      ctx.type = 'html';
      ctx.body = `<!doctype html><title>IdP error</title><p>${escapeHtml(out['error'] ?? 'error')}: ${escapeHtml(out['error_description'] ?? '')}</p>`;
    },
  });

  // Development convenience: accept mcpgate's callback on any loopback port, so the gateway's
  // port need not be known before the IdP starts.
  const redirectUriAllowed = provider.Client.prototype.redirectUriAllowed;
  provider.Client.prototype.redirectUriAllowed = function allowed(this: unknown, value: string) {
    return redirectUriAllowed.call(this, value) || LOOPBACK_CALLBACK.test(value);
  };
  provider.on('grant.success', (ctx) => {
    if (ctx.oidc.params?.['grant_type'] === 'refresh_token') refreshes++;
  });
  provider.on('grant.error', (ctx, error) => {
    if (ctx.oidc.params?.['grant_type'] === 'refresh_token' && (error as { error?: string }).error === 'invalid_grant') refreshRejections++;
  });

  const providerCallback = provider.callback();
  handler = (req, res) => {
    route(req, res).catch((error: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`dev IdP error: ${(error as Error).message}`);
    });
  };

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', issuer);
    const interaction = /^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/.exec(url.pathname);
    if (interaction) return handleInteraction(req, res, interaction[2] !== undefined);
    if (url.pathname === '/auth' && req.method === 'GET') {
      // oidc-provider drops offline_access unless prompt=consent is asked for (OIDC Core §11);
      // Keycloak and Okta do not. Behave like them, so mcpgate needs no IdP-specific parameters.
      const scope = url.searchParams.get('scope') ?? '';
      if (scope.split(' ').includes('offline_access') && !url.searchParams.has('prompt')) {
        url.searchParams.set('prompt', 'consent');
        req.url = url.pathname + url.search;
      }
    }
    if (url.pathname === '/token' && req.method === 'POST' && beforeRefresh !== null) {
      const body = await readAll(req, 64 * 1024);
      if (new URLSearchParams(body.toString('utf8')).get('grant_type') === 'refresh_token') await beforeRefresh();
      replayBody(req, body);
    } else if (url.pathname === '/token' && req.method === 'POST' && refreshFailure !== null) {
      const body = await readAll(req, 64 * 1024);
      if (new URLSearchParams(body.toString('utf8')).get('grant_type') === 'refresh_token') {
        if (refreshFailure === 'invalid_grant') {
          res.writeHead(400, { 'content-type': 'application/json', 'cache-control': 'no-store' });
          res.end('{"error":"invalid_grant","error_description":"grant request is invalid"}');
        } else {
          res.writeHead(503, { 'content-type': 'text/html' });
          res.end('<!doctype html><title>503</title><p>Service Unavailable</p>');
        }
        return;
      }
      replayBody(req, body);
    }
    providerCallback(req, res);
  }

  async function handleInteraction(req: IncomingMessage, res: ServerResponse, isLoginPost: boolean): Promise<void> {
    let details: InteractionDetails;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      return sendHtml(res, 400, page('Sign-in expired', '<p>This sign-in request has expired. Start again from your application.</p>'));
    }
    if (details.prompt.name === 'login') {
      if (!isLoginPost || req.method !== 'POST') return sendHtml(res, 200, loginForm(details.uid));
      const form = new URLSearchParams((await readAll(req, 64 * 1024)).toString('utf8'));
      const user = users.find((u) => u.login === form.get('login') && u.password === form.get('password'));
      if (!user) return sendHtml(res, 401, loginForm(details.uid, 'Wrong user name or password.'));
      return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
    }
    if (details.prompt.name === 'consent') {
      // No consent screen here: approve whatever the fixed mcpgate client asked for.
      const accountId = details.session?.accountId;
      if (!accountId) return sendHtml(res, 400, page('No session', '<p>Sign in first.</p>'));
      const grant = (details.grantId ? await provider.Grant.find(details.grantId) : undefined)
        ?? new provider.Grant({ accountId, clientId: String(details.params['client_id']) });
      const missing = details.prompt.details;
      const scopes = (missing['missingOIDCScope'] as string[] | undefined) ?? [];
      if (scopes.length > 0) grant.addOIDCScope(scopes.join(' '));
      const claims = (missing['missingOIDCClaims'] as string[] | undefined) ?? [];
      if (claims.length > 0) grant.addOIDCClaims(claims);
      const resourceScopes = (missing['missingResourceScopes'] as Record<string, string[]> | undefined) ?? {};
      for (const [indicator, granted] of Object.entries(resourceScopes)) grant.addResourceScope(indicator, granted.join(' '));
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    return sendHtml(res, 400, page('Unsupported', `<p>Unsupported prompt ${escapeHtml(details.prompt.name)}.</p>`));
  }

  let stopped = false;
  return {
    issuer,
    clientId,
    clientSecret,
    audience,
    jwksUri: `${issuer}/jwks`,
    users,
    failRefresh(kind) {
      refreshFailure = kind;
    },
    beforeRefreshGrant(hook) {
      beforeRefresh = hook;
    },
    refreshCount: () => refreshes,
    refreshRejections: () => refreshRejections,
    async stop() {
      if (stopped) return;
      stopped = true;
      await closeServer(server, sockets);
    },
    async start() {
      if (!stopped) return;
      await listen(server, port);
      stopped = false;
    },
    async close() {
      if (!stopped) await closeServer(server, sockets);
      stopped = true;
    },
  };
}

function loginForm(uid: string, error?: string): string {
  return page(
    'Sign in to the development IdP',
    `${error ? `<p role="alert" class="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
  <label>User <input name="login" autocomplete="username" required autofocus></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button type="submit">Sign in</button>
</form>`,
  );
}

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font:16px system-ui;max-width:28rem;margin:3rem auto}label{display:block;margin:.5rem 0}.error{color:#b00}</style></head>
<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

function sendHtml(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'x-frame-options': 'DENY' });
  res.end(html);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as { port: number }).port);
    });
  });
}

function closeServer(server: Server, sockets: Set<Socket>): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    for (const socket of sockets) socket.destroy();
  });
}

if (import.meta.main) {
  const idp = await startDevIdp({ port: Number(process.argv[2] ?? 0) });
  console.log(`development IdP: ${idp.issuer}`);
  console.log(`  client: ${idp.clientId} / ${idp.clientSecret}`);
  for (const u of idp.users) console.log(`  user: ${u.login} / ${u.password} (sub ${u.sub})`);
  const stop = () => void idp.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
