/**
 * Client metadata (RFC 7591 §2) as we accept it, from a registration request or a Client ID
 * Metadata Document: one parser, so both ways of becoming a client obey the same rules.
 * Fields we do not use are ignored (RFC 7591 §2: "MAY ignore"); fields we use are checked.
 * Grant and response types we do not support are dropped rather than refused (RFC 7591 §3.2.1:
 * the server registers the values it supports and says so in its response): VS Code asks for
 * the device code grant beside the code grant, and must still get in.
 */
import { InvalidClientMetadata, InvalidRedirectUri } from '../../http/errors.ts';
import type { ClientRecord } from '../records/records.ts';
import { OPEN_REDIRECT_SCHEMES, redirectUriProblem, type RedirectSchemePolicy } from './redirect-uri.ts';

/** The metadata we keep, with defaults applied. */
export type ClientMetadata = Pick<
  ClientRecord,
  'tokenEndpointAuthMethod' | 'redirectUris' | 'grantTypes' | 'clientName' | 'clientUri' | 'logoUri' | 'scope'
> & { responseTypes: string[] };

/** What a client record keeps of its metadata, the same for a registration and a metadata document. */
export function recordedMetadata(metadata: ClientMetadata): Pick<ClientRecord, 'redirectUris' | 'grantTypes' | 'clientName' | 'clientUri' | 'logoUri' | 'scope'> {
  return {
    redirectUris: metadata.redirectUris,
    grantTypes: metadata.grantTypes,
    clientName: metadata.clientName,
    clientUri: metadata.clientUri,
    logoUri: metadata.logoUri,
    scope: metadata.scope,
  };
}

/** Redirect URIs per client at most. */
export const MAX_REDIRECT_URIS = 10;
const AUTH_METHODS = ['none', 'client_secret_basic', 'client_secret_post'] as const;
/** The grant types a client can use here; the order is the one a registration response lists them in. */
const GRANT_TYPES = ['authorization_code', 'refresh_token'];
/** RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E, space-separated. */
export const SCOPE = /^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$/;

/** Options of {@link parseClientMetadata}. */
export interface ClientMetadataOptions {
  /** Refuse every secret-based method (a metadata document cannot hold a secret). */
  publicOnly: boolean;
  /** The operator's allow/deny lists of redirect schemes. Default: any scheme but the never-accepted ones. */
  redirectSchemes?: RedirectSchemePolicy;
}

/**
 * Checks client metadata and fills the defaults: `token_endpoint_auth_method` `none` (a public
 * client with PKCE), `grant_types` `authorization_code` and `refresh_token`, `response_types` `code`.
 * Unsupported grant and response types are left out of the result; an empty `scope` is no scope.
 * @throws InvalidRedirectUri or InvalidClientMetadata (RFC 7591 §3.2.2), with a description naming
 * the field; InvalidClientMetadata too when no usable grant or response type remains.
 */
export function parseClientMetadata(input: unknown, options: ClientMetadataOptions): ClientMetadata {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new InvalidClientMetadata('the client metadata must be a JSON object');
  }
  const body = input as Record<string, unknown>;
  const policy = options.redirectSchemes ?? OPEN_REDIRECT_SCHEMES;

  const redirectUris = body['redirect_uris'];
  if (!Array.isArray(redirectUris) || redirectUris.length === 0) throw new InvalidRedirectUri('redirect_uris must be a non-empty array');
  if (redirectUris.length > MAX_REDIRECT_URIS) throw new InvalidRedirectUri(`at most ${MAX_REDIRECT_URIS} redirect_uris are allowed`);
  redirectUris.forEach((uri, index) => {
    const problem = redirectUriProblem(uri, policy);
    if (problem) throw new InvalidRedirectUri(`redirect_uris[${index}] ${problem}`);
  });

  const method = body['token_endpoint_auth_method'] ?? 'none';
  if (!AUTH_METHODS.includes(method as (typeof AUTH_METHODS)[number])) {
    throw new InvalidClientMetadata(`token_endpoint_auth_method must be one of ${AUTH_METHODS.join(', ')}`);
  }
  if (options.publicOnly && method !== 'none') {
    throw new InvalidClientMetadata('token_endpoint_auth_method must be "none": a client metadata document cannot hold a secret');
  }

  const askedGrants = stringArray(body, 'grant_types') ?? ['authorization_code', 'refresh_token'];
  const grantTypes = GRANT_TYPES.filter((g) => askedGrants.includes(g));
  // Every client here starts with the code grant: without it, nothing it registered could be used.
  if (!grantTypes.includes('authorization_code')) {
    const asked = askedGrants.length > 0 ? askedGrants.map((g) => `"${shown(g)}"`).join(', ') : 'none';
    throw new InvalidClientMetadata(`grant_types must include authorization_code (asked for: ${asked}; supported: ${GRANT_TYPES.join(', ')})`);
  }

  // Each entry is one response type, possibly of several space-separated values ("code id_token"): only "code" itself is ours.
  const responseTypes = stringArray(body, 'response_types') ?? ['code'];
  if (!responseTypes.includes('code')) throw new InvalidClientMetadata('response_types must include "code" (the only response type supported)');

  // An empty (or blank) scope asks for nothing in particular: no restriction, as if absent.
  // MCP Inspector registers `scope: ""` when the server lists no scopes it knows of.
  const rawScope = optionalString(body, 'scope', 1000);
  const scope = rawScope === undefined || rawScope.trim() === '' ? undefined : rawScope;
  if (scope !== undefined && !SCOPE.test(scope)) throw new InvalidClientMetadata('scope must be space-separated scope tokens');

  return {
    tokenEndpointAuthMethod: method as ClientMetadata['tokenEndpointAuthMethod'],
    redirectUris: redirectUris as string[],
    grantTypes,
    responseTypes: ['code'],
    clientName: optionalString(body, 'client_name', 200),
    clientUri: optionalUrl(body, 'client_uri'),
    logoUri: optionalUrl(body, 'logo_uri'),
    scope,
  };
}

function stringArray(body: Record<string, unknown>, field: string): string[] | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new InvalidClientMetadata(`${field} must be an array of strings`);
  return value as string[];
}

function optionalString(body: Record<string, unknown>, field: string, max: number): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new InvalidClientMetadata(`${field} must be a string`);
  if (value.length > max) throw new InvalidClientMetadata(`${field} must be at most ${max} characters`);
  // Control and bidirectional-override characters would let a name masquerade as another on the consent page.
  if (/[\p{Cc}\u200E\u200F\u202A-\u202E\u2066-\u2069]/u.test(value)) throw new InvalidClientMetadata(`${field} must not contain control characters`);
  return value;
}

function optionalUrl(body: Record<string, unknown>, field: string): string | undefined {
  const value = optionalString(body, field, 2000);
  if (value === undefined) return undefined;
  const ok = URL.canParse(value) && ['https:', 'http:'].includes(new URL(value).protocol);
  if (!ok) throw new InvalidClientMetadata(`${field} must be an http(s) URL`);
  return value;
}

/** A client-supplied value for an error description: bounded, printable. */
function shown(value: string): string {
  return value.slice(0, 64).replace(/[^\x20-\x7E]/g, '?');
}
