import type { CredentialSource } from './types.ts';
import { refuseRejection } from './none.ts';

/**
 * Mode `static`: one header with a value from a secret reference. For `Authorization`, a bare
 * token (no scheme) is sent as `Bearer <token>`, which is what a secret holding a token means.
 */
export function createStaticCredential(options: { upstream: string; header: string; value: string }): CredentialSource {
  const name = options.header.toLowerCase();
  const value = name === 'authorization' && !/\s/.test(options.value.trim()) ? `Bearer ${options.value.trim()}` : options.value;
  const headers = { [name]: value };
  return {
    mode: 'static',
    headers: () => headers,
    rejected: async () => refuseRejection(options.upstream, 'it rejected the configured static credential'),
  };
}
