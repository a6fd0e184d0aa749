import type { Dispatcher } from 'undici';
import type { CredentialSource } from '../credentials/types.ts';

/** A configured upstream as the gateway path uses it, built once by the composition root. */
export interface Upstream {
  name: string;
  /** The MCP endpoint behind the gateway. */
  url: URL;
  /** Our protected-resource URL for it (RFC 9728 / RFC 8707): `{publicUrl}/{name}/mcp`. */
  resource: string;
  /** One pooled undici dispatcher per upstream. */
  dispatcher: Dispatcher;
  credentials: CredentialSource;
}
