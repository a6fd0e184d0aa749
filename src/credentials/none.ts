import { BadGateway } from '../http/errors.ts';
import type { CredentialSource, RejectionOutcome } from './types.ts';

/**
 * An upstream rejected a credential we cannot renew: the agent cannot fix that by logging in
 * again, and the upstream's own challenge would send it to a foreign authorization server.
 */
export function refuseRejection(upstream: string, why: string): RejectionOutcome {
  return { action: 'respond', error: new BadGateway(`upstream "${upstream}" refused the request: ${why}`) };
}

const NO_HEADERS: Record<string, string> = Object.freeze({});

/** Mode `none`: the upstream gets no credential at all. */
export function createNoCredential(upstream: string): CredentialSource {
  return {
    mode: 'none',
    headers: () => NO_HEADERS,
    rejected: async () => refuseRejection(upstream, 'it requires authorization and this upstream is configured with auth mode "none"'),
  };
}
