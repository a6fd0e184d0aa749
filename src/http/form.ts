import type { IncomingMessage } from 'node:http';
import { readBody } from './body.ts';
import { Forbidden, InvalidRequest } from './errors.ts';

/** Largest form body our OAuth endpoints read, bytes. Token and revocation requests are a few hundred. */
export const FORM_LIMIT_BYTES = 16 * 1024;

/**
 * Reads an `application/x-www-form-urlencoded` request body (RFC 6749 §3.2, RFC 7009 §2.1).
 * Refuses another media type and any parameter sent twice (RFC 6749 §3.1, §3.2) with
 * `invalid_request`; a body over `limit` bytes with 413.
 */
export async function readForm(req: IncomingMessage, limit = FORM_LIMIT_BYTES): Promise<Map<string, string>> {
  const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    throw new InvalidRequest('the request body must be application/x-www-form-urlencoded');
  }
  const body = await readBody(req, limit);
  const params = new Map<string, string>();
  for (const [name, value] of new URLSearchParams(body.toString('utf8'))) {
    if (params.has(name)) throw new InvalidRequest(`parameter "${name.slice(0, 40)}" is repeated`);
    params.set(name, value);
  }
  return params;
}

/**
 * Refuses a form post another site made the browser send: `Origin`, when sent, must be ours
 * (`origin`), and Fetch Metadata, when sent, must say same-origin. Neither replaces a CSRF token
 * (old browsers send neither); both stop a forged post before it costs a store read.
 * @throws Forbidden
 */
export function refuseCrossSitePost(req: IncomingMessage, origin: string): void {
  const sentOrigin = req.headers.origin;
  const site = req.headers['sec-fetch-site'];
  if ((sentOrigin !== undefined && sentOrigin !== origin) || (site !== undefined && site !== 'same-origin')) {
    throw new Forbidden('This form was sent from another site.');
  }
}
