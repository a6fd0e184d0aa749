/**
 * Discovery documents:
 * - RFC 8414 authorization server metadata, also served as OpenID Connect Discovery 1.0 for
 *   clients that only probe that name;
 * - the JWK Set of our signing keys (RFC 7517 §5);
 * - RFC 9728 protected resource metadata, one document per upstream (`/{name}/mcp` is a resource).
 * When the public URL has a path (`https://host/gw`), every document is also served at the
 * path-inserted locations the RFCs and the MCP spec's discovery order try.
 */
import { NotFound } from '../http/errors.ts';
import type { RequestContext, Route } from '../http/router.ts';
import type { SigningKeys } from './tokens/keys.ts';

/** One protected resource: an upstream behind the gateway. */
export interface ResourceDescription {
  /** The upstream's name (`/{name}/mcp`). */
  name: string;
  /** Its resource URL, e.g. `https://gw.example.com/kube/mcp`. */
  resource: string;
  /** The scopes a token for it needs. */
  scopes: readonly string[];
}

/** Dependencies of the discovery routes. */
export interface MetadataOptions {
  /** Our issuer identifier: the public URL without a trailing slash. */
  issuer: string;
  /** Base path of the public URL ('' or '/prefix'). */
  basePath: string;
  keys: SigningKeys;
  resources: readonly ResourceDescription[];
  /** Dynamic client registration is open (`authServer.registration.dynamic`): the registration endpoint is listed. */
  dynamicRegistration: boolean;
  /** `authServer.clientMetadataDocuments`: an https URL is accepted as `client_id` (CIMD). */
  clientMetadataDocuments: boolean;
  /** Seconds clients and caches may keep a document. Default 300. */
  maxAgeSeconds?: number;
}

/** The authorization server metadata document (RFC 8414 §2), with the OIDC Discovery members a plain-OAuth server can honestly state. */
export function authorizationServerMetadata(options: MetadataOptions): Record<string, unknown> {
  const { issuer } = options;
  const authMethods = ['none', 'client_secret_basic', 'client_secret_post'];
  return {
    issuer,
    authorization_endpoint: `${issuer}/oauth/authorize`,
    token_endpoint: `${issuer}/oauth/token`,
    jwks_uri: `${issuer}/.well-known/jwks.json`,
    ...(options.dynamicRegistration ? { registration_endpoint: `${issuer}/oauth/register` } : {}),
    revocation_endpoint: `${issuer}/oauth/revoke`,
    scopes_supported: [...new Set(options.resources.flatMap((r) => r.scopes))],
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_methods_supported: authMethods,
    revocation_endpoint_auth_methods_supported: authMethods,
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true, // RFC 9207 §3
    client_id_metadata_document_supported: options.clientMetadataDocuments,
    // OpenID Connect Discovery 1.0 §3 requires these two; we issue no ID tokens to agents, but
    // subjects are public and the algorithms are those of our JWKS.
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: options.keys.algorithms,
  };
}

/** The protected resource metadata of one upstream (RFC 9728 §2). */
export function protectedResourceMetadata(issuer: string, resource: ResourceDescription): Record<string, unknown> {
  return {
    resource: resource.resource,
    authorization_servers: [issuer],
    scopes_supported: resource.scopes,
    bearer_methods_supported: ['header'],
    resource_name: resource.name,
  };
}

/** The routes of every discovery document, path-inserted variants included. */
export function createMetadataRoutes(options: MetadataOptions): Route[] {
  const base = options.basePath;
  const cacheControl = `public, max-age=${options.maxAgeSeconds ?? 300}`;
  const asDocument = JSON.stringify(authorizationServerMetadata(options));
  const jwks = JSON.stringify(options.keys.jwks);
  const byName = new Map(options.resources.map((r) => [r.name, JSON.stringify(protectedResourceMetadata(options.issuer, r))]));

  const sendJson = (ctx: RequestContext, payload: string, contentType = 'application/json') => {
    ctx.res.writeHead(200, {
      'content-type': contentType,
      'content-length': Buffer.byteLength(payload),
      'cache-control': cacheControl,
      // Browser-based agents (MCP Inspector) read these documents cross-origin; they hold nothing private.
      'access-control-allow-origin': '*',
    });
    ctx.res.end(payload);
  };
  const asHandler = (ctx: RequestContext) => sendJson(ctx, asDocument);
  const resourceHandler = (ctx: RequestContext) => {
    const document = byName.get(ctx.params.upstream!);
    if (!document) throw new NotFound(`no upstream named "${ctx.params.upstream}"`);
    sendJson(ctx, document);
  };

  const asPaths = new Set([
    `/.well-known/oauth-authorization-server${base}`, // RFC 8414 §3.1: path inserted after the well-known prefix
    `/.well-known/openid-configuration${base}`, // the MCP spec also tries OIDC with path insertion
    `${base}/.well-known/openid-configuration`, // OIDC Discovery §4.1: path appended
    `${base}/.well-known/oauth-authorization-server`,
  ]);
  const resourcePaths = new Set([
    `/.well-known/oauth-protected-resource${base}/:upstream/mcp`, // RFC 9728 §3.1
    `${base}/.well-known/oauth-protected-resource/:upstream/mcp`, // for ingresses that route only the prefix to us
  ]);
  return [
    ...[...asPaths].map((path): Route => ({ method: 'GET', path, handler: asHandler, name: '/.well-known/oauth-authorization-server' })),
    { method: 'GET', path: `${base}/.well-known/jwks.json`, handler: (ctx) => sendJson(ctx, jwks, 'application/jwk-set+json'), name: '/.well-known/jwks.json' },
    ...[...resourcePaths].map((path): Route => ({ method: 'GET', path, handler: resourceHandler, name: '/.well-known/oauth-protected-resource' })),
  ];
}
