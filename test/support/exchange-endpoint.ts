/**
 * A real RFC 8693 token endpoint on loopback, for the `token_exchange` tests: client_secret_basic,
 * and the subject token (the company IdP's access token, or its ID token) verified against that
 * IdP's JWKS before a token for the upstream is issued. What it does next can be switched (down,
 * refusing the client, refusing a subject), and every request is recorded.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRemoteJWKSet, jwtVerify, SignJWT } from 'jose';
import { ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT } from '../../src/credentials/token-exchange.ts';
import type { DevIdp } from './idp.ts';

export const EXCHANGE_CLIENT = 'mcpgate-exchanger';
export const EXCHANGE_SECRET = randomBytes(18).toString('base64url');
export const AUDIENCE = 'https://api.example.test';

/** What the test exchange endpoint does with the next requests. */
export type ExchangeMode = 'ok' | 'down' | 'invalid_client';

/** A real RFC 8693 token endpoint: client_secret_basic, subject token verified against the IdP's JWKS. */
export async function startExchangeEndpoint(idp: DevIdp) {
  const jwks = createRemoteJWKSet(new URL(idp.jwksUri));
  const state = {
    mode: 'ok' as ExchangeMode,
    /** Subjects (`sub`) whose tokens are refused with invalid_request, as a policy would. */
    refusedSubjects: new Set<string>(),
    /** Subject tokens refused once each, as if revoked (the refreshed one passes). */
    refusedTokens: new Set<string>(),
    expiresIn: 120,
    requests: [] as URLSearchParams[],
    issued: 0,
    /** When set, the issued tokens are JWTs with this `iss` (as Keycloak's or Dex's); else opaque. */
    jwtIssuer: undefined as string | undefined,
  };
  const jwtKey = randomBytes(32);
  const server = createServer((req, res) => void handle(req, res).catch(() => res.writeHead(500).end()));

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    state.requests.push(form);
    const answer = (status: number, body: Record<string, unknown>) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    if (state.mode === 'down') return answer(503, { error: 'temporarily_unavailable' });
    const expected = Buffer.from(`Basic ${Buffer.from(`${EXCHANGE_CLIENT}:${EXCHANGE_SECRET}`).toString('base64')}`);
    const given = Buffer.from(req.headers.authorization ?? '');
    if (state.mode === 'invalid_client' || given.length !== expected.length || !timingSafeEqual(given, expected)) return answer(401, { error: 'invalid_client' });
    if (form.get('grant_type') !== TOKEN_EXCHANGE_GRANT) return answer(400, { error: 'unsupported_grant_type' });
    const subjectType = form.get('subject_token_type');
    if ((subjectType !== ACCESS_TOKEN_TYPE && subjectType !== ID_TOKEN_TYPE) || form.get('requested_token_type') !== ACCESS_TOKEN_TYPE) return answer(400, { error: 'invalid_request' });
    // The target: the configured audience, or resource URIs alone.
    if (form.get('audience') !== AUDIENCE && !(form.get('audience') === null && form.getAll('resource').length > 0)) return answer(400, { error: 'invalid_target' });
    const subjectToken = form.get('subject_token') ?? '';
    let sub: string;
    try {
      // An ID token is verified as one: issued to the IdP's client (mcpgate), not to an API.
      const audience = subjectType === ID_TOKEN_TYPE ? idp.clientId : idp.audience;
      ({ payload: { sub: sub = '' } } = await jwtVerify(subjectToken, jwks, { issuer: idp.issuer, audience }));
    } catch {
      return answer(400, { error: 'invalid_request', error_description: 'subject_token is invalid' });
    }
    if (state.refusedSubjects.has(sub) || state.refusedTokens.delete(subjectToken)) return answer(400, { error: 'invalid_request', error_description: 'subject_token is not acceptable' });
    state.issued++;
    const jwt = state.jwtIssuer && (await new SignJWT({ sub }).setProtectedHeader({ alg: 'HS256' }).setIssuer(state.jwtIssuer).setIssuedAt().setExpirationTime('2m').sign(jwtKey));
    return answer(200, {
      access_token: jwt || `xchg-${sub}-${state.issued}`,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: state.expiresIn,
      scope: form.get('scope') ?? undefined,
    });
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`,
    state,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** A running exchange endpoint. */
export type ExchangeEndpoint = Awaited<ReturnType<typeof startExchangeEndpoint>>;
