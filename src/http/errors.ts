/**
 * Errors that carry their own HTTP status and protocol code (status codes travel with
 * the error, never chosen per handler). One serializer (`send-error.ts`) renders them as
 * RFC 6749 §5.2 JSON, or as a JSON-RPC error on the MCP path.
 */
export interface HttpErrorOptions {
  /** Shown to the client as `error_description` / JSON-RPC `message`. Must hold no secret. */
  description?: string;
  headers?: Record<string, string>;
  cause?: unknown;
}

export class HttpError extends Error {
  override name = 'HttpError';
  /** RFC 6749-style error code, e.g. `invalid_request`. */
  readonly code: string;
  readonly status: number;
  /** JSON-RPC error code used when this error answers an MCP request. */
  readonly rpcCode: number;
  readonly headers: Record<string, string>;
  /** False for 5xx: the client sees a generic description and the details stay in the log. */
  readonly expose: boolean;

  constructor(status: number, code: string, options: HttpErrorOptions & { rpcCode?: number } = {}) {
    super(options.description ?? code, { cause: options.cause });
    this.status = status;
    this.code = code;
    this.rpcCode = options.rpcCode ?? (status >= 500 ? -32603 : -32600);
    this.headers = options.headers ?? {};
    this.expose = status < 500;
  }
}

function kind(status: number, code: string, rpcCode?: number) {
  return class extends HttpError {
    constructor(description?: string, options: Omit<HttpErrorOptions, 'description'> = {}) {
      super(status, code, { ...options, description, rpcCode });
    }
  };
}

// RFC 6749 §5.2 / §4.1.2.1 and RFC 6750 §3.1.
export const InvalidRequest = kind(400, 'invalid_request');
export const InvalidClient = kind(401, 'invalid_client');
export const InvalidGrant = kind(400, 'invalid_grant');
export const UnauthorizedClient = kind(400, 'unauthorized_client');
export const UnsupportedGrantType = kind(400, 'unsupported_grant_type');
export const UnsupportedResponseType = kind(400, 'unsupported_response_type');
export const InvalidScope = kind(400, 'invalid_scope');
export const InvalidTarget = kind(400, 'invalid_target'); // RFC 8707 §2
export const AccessDenied = kind(403, 'access_denied');
export const InvalidToken = kind(401, 'invalid_token');
export const InsufficientScope = kind(403, 'insufficient_scope');
export const InvalidClientMetadata = kind(400, 'invalid_client_metadata'); // RFC 7591 §3.2.2
export const InvalidRedirectUri = kind(400, 'invalid_redirect_uri');
export const InteractionRequired = kind(400, 'interaction_required'); // OpenID Connect Core §3.1.2.6
export const ServerError = kind(500, 'server_error');
export const TemporarilyUnavailable = kind(503, 'temporarily_unavailable');

// The front door and the gateway path.
export const NotFound = kind(404, 'not_found', -32601);
export const MethodNotAllowed = kind(405, 'method_not_allowed');
export const Forbidden = kind(403, 'forbidden');
export const PayloadTooLarge = kind(413, 'payload_too_large');
export const UnsupportedMediaType = kind(415, 'unsupported_media_type');
export const ParseError = kind(400, 'parse_error', -32700);
export const TooManyRequests = kind(429, 'too_many_requests');
export const BadGateway = kind(502, 'bad_gateway', -32000);
export const GatewayTimeout = kind(504, 'gateway_timeout', -32001);
export const ServiceUnavailable = kind(503, 'service_unavailable', -32002);

/** Turns anything thrown into an HttpError; unknown errors become an opaque 500. */
export function toHttpError(error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof Error && error.name === 'StoreUnavailableError') {
    return new TemporarilyUnavailable('storage is unavailable, retry shortly', { headers: { 'retry-after': '5' }, cause: error });
  }
  return new ServerError(undefined, { cause: error });
}
