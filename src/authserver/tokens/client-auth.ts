/**
 * Client authentication at the token and revocation endpoints (RFC 6749 §2.3, §3.2.1;
 * RFC 7591 §2 `token_endpoint_auth_method`). Public clients (`none`) identify themselves with
 * `client_id`; confidential ones prove a secret by HTTP Basic or in the body, whichever they
 * registered. Secrets are compared by hash, in constant time.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { InvalidClient, InvalidRequest } from '../../http/errors.ts';
import type { ClientRecord } from '../records/records.ts';
import { tokenHash } from '../records/stores.ts';
import { safeEqual } from './mint.ts';

/** Looks a client up by id: the registered clients, and (part of the authorize flow) metadata documents. */
export type ClientResolver = (clientId: string) => Promise<ClientRecord | undefined>;

/** The credentials a request carried. */
interface Presented {
  clientId: string;
  secret?: string;
  method: ClientRecord['tokenEndpointAuthMethod'];
}

/**
 * Authenticates the client of a token or revocation request and returns its record.
 * @throws InvalidClient (401) for an unknown client, a wrong secret, or a method other than the
 *   registered one; with `WWW-Authenticate: Basic` when Basic was tried (RFC 6749 §5.2).
 * @throws InvalidRequest when no client is named, or when two methods are combined.
 */
export async function authenticateClient(headers: IncomingHttpHeaders, params: Map<string, string>, resolve: ClientResolver): Promise<ClientRecord> {
  const presented = presentedCredentials(headers, params);
  const usedBasic = presented.method === 'client_secret_basic';
  const refuse = (why: string) =>
    new InvalidClient(`client authentication failed: ${why}`, usedBasic ? { headers: { 'www-authenticate': 'Basic realm="mcpgate"' } } : {});

  const client = await resolve(presented.clientId);
  if (!client) throw refuse('unknown client');
  if (client.tokenEndpointAuthMethod !== presented.method) {
    throw refuse(`the client is registered for "${client.tokenEndpointAuthMethod}", not "${presented.method}"`);
  }
  if (presented.method !== 'none') {
    // Hash first, then compare the hashes in constant time: neither a secret nor its length leaks.
    if (!client.secretHash || !safeEqual(tokenHash(presented.secret!), client.secretHash)) throw refuse('wrong client secret');
  }
  return client;
}

function presentedCredentials(headers: IncomingHttpHeaders, params: Map<string, string>): Presented {
  const bodyId = params.get('client_id');
  const bodySecret = params.get('client_secret');
  const basic = basicCredentials(headers.authorization);
  if (basic) {
    if (bodySecret !== undefined) throw new InvalidRequest('use one client authentication method, not two');
    if (bodyId !== undefined && bodyId !== basic.clientId) throw new InvalidRequest('client_id does not match the authenticated client');
    return { clientId: basic.clientId, secret: basic.secret, method: 'client_secret_basic' };
  }
  if (!bodyId) throw new InvalidRequest('client_id is required');
  if (bodySecret !== undefined) return { clientId: bodyId, secret: bodySecret, method: 'client_secret_post' };
  return { clientId: bodyId, method: 'none' };
}

/** RFC 6749 §2.3.1: Basic with form-urlencoded id and secret; undefined when no Basic header was sent. */
function basicCredentials(header: string | undefined): { clientId: string; secret: string } | undefined {
  if (!header || !/^basic /i.test(header)) return undefined;
  const malformed = () => new InvalidClient('malformed Basic credentials', { headers: { 'www-authenticate': 'Basic realm="mcpgate"' } });
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) throw malformed();
  try {
    const clientId = formDecode(decoded.slice(0, colon));
    const secret = formDecode(decoded.slice(colon + 1));
    if (!secret) throw malformed();
    return { clientId, secret };
  } catch (error) {
    if (error instanceof InvalidClient) throw error;
    throw malformed();
  }
}

function formDecode(text: string): string {
  return decodeURIComponent(text.replace(/\+/g, ' '));
}
