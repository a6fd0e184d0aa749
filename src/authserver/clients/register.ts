/**
 * `POST /oauth/register`: Dynamic Client Registration (RFC 7591). Public clients
 * (`token_endpoint_auth_method: none`, PKCE) by default; confidential clients on request, whose
 * secret is returned once and stored only as a hash. Limited in size (and in rate by route-limits.ts), optionally gated
 * by an initial access token (RFC 7591 §3).
 *
 * Registration is anonymous, so what it may leave in the store is bounded: a registration lives
 * `unusedTtlMs` (minutes) until its first use, a sign-in at the IdP for it (the callback), and
 * only then the idle period, slid by later use; and no more than `maxUnused` registrations wait
 * for their first use across the fleet. Past that, new ones are refused (503
 * `temporarily_unavailable` with `Retry-After`: RFC 7591 §3.2.2 has no code for "full"), rather
 * than evicting others, which would let a flood push out the registration of an agent a user is
 * signing in with right now.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readBody } from '../../http/body.ts';
import { InvalidClientMetadata, InvalidToken, TemporarilyUnavailable, UnsupportedMediaType } from '../../http/errors.ts';
import type { Handler, RequestContext } from '../../http/router.ts';
import { parseClientMetadata, recordedMetadata } from './client-metadata.ts';
import type { RedirectSchemePolicy } from './redirect-uri.ts';
import type { AuthStores, ClientRecord } from '../records/records.ts';
import { tokenHash } from '../records/stores.ts';

/** Largest registration request accepted, in bytes: 16 KiB. */
export const MAX_REGISTRATION_BYTES = 16 * 1024;
/** How long a used registration lives without being used again, in milliseconds: 90 days. */
export const CLIENT_IDLE_TTL_MS = 90 * 86_400_000;
/** How long a registration lives until its first use, in milliseconds: 10 minutes. */
export const CLIENT_UNUSED_TTL_MS = 600_000;
/** Registrations waiting for their first use, at most, across the fleet. */
export const MAX_UNUSED_CLIENTS = 1000;

/** Options of {@link createRegistrationEndpoint}. */
export interface RegistrationEndpointOptions {
  stores: Pick<AuthStores, 'clients'>;
  /** When set, requests must carry `Authorization: Bearer <this>` (RFC 7591 §3). */
  initialAccessToken: string | null;
  /** Lifetime of a registration until its first use (`authServer.registration.unusedTtl`), ms. Default 10 minutes. */
  unusedTtlMs?: number;
  /** Registrations waiting for their first use, at most (`authServer.registration.maxUnused`). Default 1000. */
  maxUnused?: number;
  /** The clock, epoch milliseconds. Default `Date.now`. */
  now?: () => number;
  /** `authServer.registration.redirectSchemes`. Default: any scheme but the never-accepted ones. */
  redirectSchemes?: RedirectSchemePolicy;
}

/** Creates the handler of `POST /oauth/register`. */
export function createRegistrationEndpoint(options: RegistrationEndpointOptions): Handler {
  const now = options.now ?? Date.now;
  const unusedTtlMs = options.unusedTtlMs ?? CLIENT_UNUSED_TTL_MS;
  const maxUnused = options.maxUnused ?? MAX_UNUSED_CLIENTS;
  if (!Number.isSafeInteger(unusedTtlMs) || unusedTtlMs <= 0) throw new TypeError('unusedTtlMs must be a positive integer');
  if (!Number.isSafeInteger(maxUnused) || maxUnused <= 0) throw new TypeError('maxUnused must be a positive integer');
  const expectedToken = options.initialAccessToken === null ? undefined : createHash('sha256').update(options.initialAccessToken).digest();

  return async function register(ctx) {
    checkInitialAccessToken(ctx);
    const metadata = parseClientMetadata(await readJson(ctx), { publicOnly: false, redirectSchemes: options.redirectSchemes });
    // Counted once the request is valid: a malformed one spends nothing.
    const budget = await options.stores.clients.admitUnused({ max: maxUnused, windowMs: unusedTtlMs });
    if (!budget.admitted) {
      ctx.log.error = 'registrations_full';
      throw new TemporarilyUnavailable('too many client registrations are waiting for their first use; retry later', {
        headers: { 'retry-after': String(Math.max(1, Math.ceil(budget.retryAfterMs / 1000))) },
      });
    }
    const secret = metadata.tokenEndpointAuthMethod === 'none' ? undefined : randomBytes(32).toString('base64url');
    const createdAt = now();
    const client: ClientRecord = {
      clientId: randomBytes(18).toString('base64url'),
      kind: 'dcr',
      // The same hash the token endpoint compares a presented secret with (client-auth.ts).
      secretHash: secret === undefined ? undefined : tokenHash(secret),
      tokenEndpointAuthMethod: metadata.tokenEndpointAuthMethod,
      ...recordedMetadata(metadata),
      createdAt,
    };
    await options.stores.clients.put(client, unusedTtlMs);
    ctx.log.clientId = client.clientId;

    // RFC 7591 §3.2.1: the registered metadata as registered (defaults filled, unsupported grant and
    // response types left out), and the secret this one time.
    const response = JSON.stringify({
      client_id: client.clientId,
      client_id_issued_at: Math.floor(createdAt / 1000),
      ...(secret === undefined ? {} : { client_secret: secret, client_secret_expires_at: 0 }),
      redirect_uris: client.redirectUris,
      grant_types: client.grantTypes,
      response_types: metadata.responseTypes,
      token_endpoint_auth_method: client.tokenEndpointAuthMethod,
      client_name: client.clientName,
      client_uri: client.clientUri,
      logo_uri: client.logoUri,
      scope: client.scope,
    });
    ctx.res.writeHead(201, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(response),
      'cache-control': 'no-store',
      pragma: 'no-cache',
    });
    ctx.res.end(response);
  };

  function checkInitialAccessToken(ctx: RequestContext): void {
    if (!expectedToken) return;
    const header = ctx.req.headers.authorization ?? '';
    const match = /^Bearer +([\x21-\x7E]+)\s*$/i.exec(header);
    // Compare digests: equal lengths for timingSafeEqual, and no timing signal about the token's length.
    const given = createHash('sha256').update(match?.[1] ?? '').digest();
    if (!match || !timingSafeEqual(given, expectedToken)) {
      throw new InvalidToken('a valid initial access token is required to register', {
        headers: { 'www-authenticate': match ? 'Bearer error="invalid_token"' : 'Bearer' },
      });
    }
  }
}

async function readJson(ctx: RequestContext): Promise<unknown> {
  const type = (ctx.req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') throw new UnsupportedMediaType('the registration request must be application/json');
  const body = await readBody(ctx.req, MAX_REGISTRATION_BYTES);
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new InvalidClientMetadata('the request body is not valid JSON');
  }
}
