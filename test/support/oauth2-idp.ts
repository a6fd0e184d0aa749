/**
 * A plain OAuth 2.0 identity provider for the tests, shaped like GitHub's OAuth apps and nothing
 * more: RFC 6749 authorization code with RFC 7636 PKCE (S256 required), an HTML login form, a
 * token endpoint, a user-info API answering GitHub-shaped JSON (`{ "login": "alice", "id": 1 }`)
 * and an RFC 7009 revocation endpoint. No OpenID Connect: no discovery, no ID token, no JWKS.
 *
 * GitHub's quirks are reproduced, because the gateway must cope with them: the token endpoint
 * answers form-encoded unless asked for JSON (`Accept: application/json`), and answers its OAuth
 * errors with status 200 and an `error` member; the user-info API refuses a request without a
 * `User-Agent` (403). Tokens never expire (no `expires_in`, no refresh token) unless
 * `accessTokenTtlSeconds` is set; then they do, with rotating refresh tokens (a reused one ends
 * the grant, as OAuth 2.1 §4.3.1 allows).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A user of the test IdP. */
export interface OAuth2IdpUser {
  login: string;
  id: number;
  password: string;
  name?: string;
  email?: string;
}

/** Options of {@link startOAuth2Idp}. */
export interface OAuth2IdpOptions {
  /** Access-token lifetime; absent (the default) issues tokens that never expire and no refresh token. */
  accessTokenTtlSeconds?: number;
  /** Default alice (id 1) and bob (id 2) with random passwords. */
  users?: Array<Omit<OAuth2IdpUser, 'password'> & { password?: string }>;
}

interface Grant {
  user: OAuth2IdpUser;
  scope: string;
  /** Access tokens of the grant still accepted, with their expiry (epoch ms, Infinity when none). */
  access: Map<string, number>;
  /** The current refresh token (rotated on each use). */
  refresh?: string;
  /** Refresh tokens already used: presenting one again ends the grant. */
  used: Set<string>;
}

/** A running test IdP. */
export interface OAuth2Idp {
  /** `http://127.0.0.1:<port>` */
  url: string;
  clientId: string;
  clientSecret: string;
  /** The endpoints as `idp:` keys of a `kind: oauth2` config. */
  endpoints: { authorizationEndpoint: string; tokenEndpoint: string; userinfoEndpoint: string; revocationEndpoint: string };
  users: OAuth2IdpUser[];
  /** Redirect URIs registered for the client (exact match); add the gateway's callback once it listens. */
  redirectUris: Set<string>;
  /** Every request to the token endpoint: its form and its headers. */
  tokenRequests: Array<{ form: URLSearchParams; accept: string | undefined; authorization: string | undefined }>;
  /** Every request to the user-info API: its `Accept` and `User-Agent`. */
  userinfoRequests: Array<{ accept: string | undefined; userAgent: string | undefined }>;
  /** Refresh-token grants answered with new tokens. */
  refreshCount(): number;
  /** Whether the IdP accepts an access token right now, and for whom. */
  userOf(accessToken: string): OAuth2IdpUser | undefined;
  /** Revokes the grant an access token belongs to, as a user removing the app at GitHub would. */
  revokeGrantOf(accessToken: string): void;
  /** Tokens revoked through the RFC 7009 endpoint. */
  revoked: string[];
  close(): Promise<void>;
}

/** Starts the IdP on a free loopback port. */
export async function startOAuth2Idp(options: OAuth2IdpOptions = {}): Promise<OAuth2Idp> {
  const clientId = `Iv1.${randomBytes(8).toString('hex')}`;
  const clientSecret = randomBytes(20).toString('hex');
  const users: OAuth2IdpUser[] = (options.users ?? [{ login: 'alice', id: 1, name: 'Alice Liddell' }, { login: 'bob', id: 2 }]).map((u) => ({
    ...u,
    password: u.password ?? randomBytes(9).toString('base64url'),
  }));
  const redirectUris = new Set<string>();
  const transactions = new Map<string, { redirectUri: string; state: string | null; challenge: string; scope: string }>();
  const codes = new Map<string, { user: OAuth2IdpUser; redirectUri: string; challenge: string; scope: string }>();
  const grants: Grant[] = [];
  const tokenRequests: OAuth2Idp['tokenRequests'] = [];
  const userinfoRequests: OAuth2Idp['userinfoRequests'] = [];
  const revoked: string[] = [];
  let refreshes = 0;
  const ttl = options.accessTokenTtlSeconds;

  const grantOfAccess = (token: string) =>
    grants.find((g) => {
      const expiry = g.access.get(token);
      return expiry !== undefined && expiry > Date.now();
    });

  function issue(grant: Grant): Record<string, unknown> {
    const accessToken = `gho_${randomBytes(18).toString('base64url')}`;
    grant.access.set(accessToken, ttl === undefined ? Infinity : Date.now() + ttl * 1000);
    const body: Record<string, unknown> = { access_token: accessToken, token_type: 'bearer', scope: grant.scope };
    if (ttl !== undefined) {
      grant.refresh = `ghr_${randomBytes(18).toString('base64url')}`;
      body.expires_in = ttl;
      body.refresh_token = grant.refresh;
    }
    return body;
  }

  async function form(req: IncomingMessage): Promise<URLSearchParams> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  }

  const same = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

  /** client_secret_post or client_secret_basic, as GitHub accepts both. */
  function clientAuthenticated(req: IncomingMessage, body: URLSearchParams): boolean {
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    if (basic) {
      const [id, secret] = Buffer.from(basic[1]!, 'base64').toString('utf8').split(':').map(decodeURIComponent);
      return id === clientId && same(secret ?? '', clientSecret);
    }
    return body.get('client_id') === clientId && same(body.get('client_secret') ?? '', clientSecret);
  }

  function tokenAnswer(req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>): void {
    // GitHub: form-encoded unless the client asks for JSON; errors with status 200.
    if ((req.headers.accept ?? '').includes('application/json')) {
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(JSON.stringify(body));
    } else {
      const text = new URLSearchParams(Object.entries(body).map(([k, v]): [string, string] => [k, String(v)])).toString();
      res.writeHead(200, { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }).end(text);
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://idp.test');
    const page = (status: number, html: string): void => void res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' }).end(`<!doctype html><html><body>${html}</body></html>`);

    if (req.method === 'GET' && url.pathname === '/login/oauth/authorize') {
      const q = url.searchParams;
      const redirectUri = q.get('redirect_uri') ?? '';
      // An unknown client or redirect URI is never redirected to (RFC 6749 §4.1.2.1).
      if (q.get('client_id') !== clientId || !redirectUris.has(redirectUri)) return page(400, '<p>unknown client or redirect_uri</p>');
      if (q.get('response_type') !== 'code' || q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge')) {
        const to = new URL(redirectUri);
        to.searchParams.set('error', 'invalid_request');
        if (q.get('state') !== null) to.searchParams.set('state', q.get('state')!);
        res.writeHead(302, { location: to.href }).end();
        return;
      }
      const tx = randomBytes(12).toString('base64url');
      transactions.set(tx, { redirectUri, state: q.get('state'), challenge: q.get('code_challenge')!, scope: q.get('scope') ?? '' });
      return page(
        200,
        `<h1>Sign in to the test OAuth 2.0 IdP</h1><form method="post" action="/session"><input type="hidden" name="tx" value="${tx}">` +
          '<input name="login" autocomplete="username"><input name="password" type="password"><button type="submit">Sign in</button></form>',
      );
    }

    if (req.method === 'POST' && url.pathname === '/session') {
      const body = await form(req);
      const tx = transactions.get(body.get('tx') ?? '');
      const user = users.find((u) => u.login === body.get('login') && same(u.password, body.get('password') ?? ''));
      if (!tx || !user) return page(401, '<p>wrong login or password</p>');
      transactions.delete(body.get('tx')!);
      const code = randomBytes(16).toString('hex');
      codes.set(code, { user, redirectUri: tx.redirectUri, challenge: tx.challenge, scope: tx.scope });
      const to = new URL(tx.redirectUri);
      to.searchParams.set('code', code);
      if (tx.state !== null) to.searchParams.set('state', tx.state);
      res.writeHead(302, { location: to.href }).end();
      return;
    }

    if (req.method === 'POST' && url.pathname === '/login/oauth/access_token') {
      const body = await form(req);
      tokenRequests.push({ form: body, accept: req.headers.accept, authorization: req.headers.authorization });
      const fail = (error: string) => tokenAnswer(req, res, { error, error_description: error.replace(/_/g, ' ') });
      if (!clientAuthenticated(req, body)) return fail('incorrect_client_credentials');
      if (body.get('grant_type') === 'authorization_code' || (!body.get('grant_type') && body.get('code'))) {
        const code = codes.get(body.get('code') ?? '');
        codes.delete(body.get('code') ?? '');
        if (!code) return fail('bad_verification_code');
        if (body.get('redirect_uri') !== code.redirectUri) return fail('redirect_uri_mismatch');
        const verifier = body.get('code_verifier') ?? '';
        if (createHash('sha256').update(verifier).digest('base64url') !== code.challenge) return fail('bad_verification_code');
        const grant: Grant = { user: code.user, scope: code.scope, access: new Map(), used: new Set() };
        grants.push(grant);
        return tokenAnswer(req, res, issue(grant));
      }
      if (body.get('grant_type') === 'refresh_token') {
        const presented = body.get('refresh_token') ?? '';
        const reused = grants.find((g) => g.used.has(presented));
        if (reused) {
          // A replayed refresh token: the grant is ended, every token of it with it.
          grants.splice(grants.indexOf(reused), 1);
          return fail('bad_refresh_token');
        }
        const grant = grants.find((g) => g.refresh === presented);
        if (!grant) return fail('bad_refresh_token');
        grant.used.add(presented);
        refreshes++;
        return tokenAnswer(req, res, issue(grant));
      }
      return fail('unsupported_grant_type');
    }

    if (req.method === 'GET' && url.pathname === '/user') {
      userinfoRequests.push({ accept: req.headers.accept, userAgent: req.headers['user-agent'] });
      const json = (status: number, value: unknown): void => void res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(value));
      if (!req.headers['user-agent']) return json(403, { message: 'Request forbidden by administrative rules. Please make sure your request has a User-Agent header' });
      const token = /^(?:Bearer|token) (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
      const grant = token ? grantOfAccess(token) : undefined;
      if (!grant) return json(401, { message: 'Bad credentials' });
      const { login, id, name, email } = grant.user;
      return json(200, { login, id, node_id: `U_${id}`, type: 'User', name: name ?? null, email: email ?? null, site_admin: false });
    }

    if (req.method === 'POST' && url.pathname === '/oauth/revoke') {
      const body = await form(req);
      if (!clientAuthenticated(req, body)) return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid_client"}');
      const token = body.get('token') ?? '';
      revoked.push(token);
      const grant = grants.find((g) => g.refresh === token || g.access.has(token));
      if (grant) grants.splice(grants.indexOf(grant), 1);
      return void res.writeHead(200).end();
    }

    res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"Not Found"}');
  }

  const server = createServer((req, res) => void handle(req, res).catch(() => res.writeHead(500).end()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: base,
    clientId,
    clientSecret,
    endpoints: {
      authorizationEndpoint: `${base}/login/oauth/authorize`,
      tokenEndpoint: `${base}/login/oauth/access_token`,
      userinfoEndpoint: `${base}/user`,
      revocationEndpoint: `${base}/oauth/revoke`,
    },
    users,
    redirectUris,
    tokenRequests,
    userinfoRequests,
    refreshCount: () => refreshes,
    userOf: (token) => grantOfAccess(token)?.user,
    revokeGrantOf(token) {
      const grant = grants.find((g) => g.access.has(token));
      if (grant) grants.splice(grants.indexOf(grant), 1);
    },
    revoked,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
