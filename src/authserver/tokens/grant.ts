/**
 * What the token endpoint's grant handlers share: their dependencies, already validated, and
 * the grant each one settles on before tokens are minted. Imports none of the handlers back.
 */
import type { IdpSessionTokens } from '../../credentials/idp-session.ts';
import type { Logger } from '../../observability/logger.ts';
import type { AuthStores, ClientRecord } from '../records/records.ts';
import type { EndSession } from '../records/session-end.ts';
import type { StepUpMarks } from './step-up.ts';

/** The dependencies of every grant handler, defaults applied and checked (see `TokenEndpointOptions` in `token.ts`). */
export interface GrantDeps {
  stores: AuthStores;
  logger: Logger;
  /** The one session-ending path: a reused code or refresh token ends the session and its upstream grants. */
  endSession: EndSession;
  /** Clock, epoch ms. */
  now: () => number;
  /** How far each refresh slides the session, and a refresh token's lifetime, ms. */
  refreshTokenTtlMs: number;
  /** How long the immediately previous refresh token is refused without revoking the family, ms. */
  reuseGraceMs: number;
  /** Absolute lifetime of a session from its login, ms. */
  sessionMaxLifetimeMs: number;
  /** Sessions whose refreshes are refused for a step-up (step-up.ts); absent: none are. */
  stepUp?: Pick<StepUpMarks, 'refuse'> | undefined;
  /** The sessions' IdP tokens; absent: the IdP is not asked on a refresh. */
  idpSession?: Pick<IdpSessionTokens, 'current'> | undefined;
}

/** What a grant settled on, before the tokens are minted. */
export interface Grant {
  client: ClientRecord;
  subject: string;
  sessionId: string;
  resource: string;
  /** Scopes of the access token. */
  scopes: string[];
  /** Scopes the new refresh token carries: always the original grant (RFC 6749 §6). */
  grantedScopes: string[];
  /** The session's end: a new refresh token lives until then. */
  sessionExpiresAt: number;
  /** The refresh token to issue, when it was chosen before (a rotation records its successor). */
  refreshToken?: string;
}
