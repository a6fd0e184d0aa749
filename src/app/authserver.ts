/**
 * The authorization server's stores, the one session-ending path and the company IdP, with or
 * without login; the login itself (`idp:` configured) is assembled by login.ts.
 */
import type { AuthStores, IdpTokens } from '../authserver/records/records.ts';
import { createSessionEnding, type EndSession, type SessionEndedHook } from '../authserver/records/session-end.ts';
import { createAuthStores } from '../authserver/records/stores.ts';
import { createStepUpMarks, type StepUpMarks } from '../authserver/tokens/step-up.ts';
import type { Config } from '../config/schema.ts';
import type * as OAuth2Idp from '../idp/oauth2.ts';
import type * as OidcIdp from '../idp/oidc.ts';
import type { IdpClient } from '../idp/types.ts';
import type { AppBasics } from './basics.ts';
import { loadModule } from './lazy.ts';
import type { Storage } from './storage.ts';
import type { UpstreamOAuth } from './upstream-oauth.ts';

/** What the authorization server keeps, with or without login. */
export interface Sessions {
  authStores: AuthStores;
  /** Sessions answered with the HTTP re-challenge: their refreshes are refused so the agent re-authorizes (step-up.ts). */
  stepUp: StepUpMarks;
  /** The company IdP our login is federated to; absent without `idp:`. */
  idpClient: IdpClient | undefined;
  /** The one path by which a session ends. */
  endSession: EndSession;
}

/** The authorization server's stores, the company IdP (`idpClient` when a test passes one) and the session-ending path. */
export function assembleSessions(options: { basics: AppBasics; storage: Storage; upstreamOAuth: UpstreamOAuth; idpClient: IdpClient | undefined }): Sessions {
  const { config, now, logger, issuer } = options.basics;
  const { store, sealer } = options.storage;
  const authStores = createAuthStores({ store, sealer, now, logger });
  const stepUp = createStepUpMarks({ store, now });
  // Every way a session ends (logout, revocation, an IdP or upstream that refuses it) also forgets
  // the session's upstream grants and revokes them at their own authorization servers.
  const { flows, upstreams } = options.upstreamOAuth;
  const onSessionEnded: SessionEndedHook[] = upstreams.length > 0 ? [(sid) => flows.forgetSession(sid)] : [];
  // The company IdP our login is federated to, by `idp.kind`.
  const idpClient = config.idp ? (options.idpClient ?? createIdpClient(config.idp, { issuer, devMode: config.server.devMode, now })) : undefined;
  const endSession = createSessionEnding({
    sessions: authStores.sessions,
    onSessionEnded,
    logger,
    // An IdP with a revocation endpoint: signing out of mcpgate also revokes the IdP's grant.
    ...(idpClient?.revoke && { revokeIdpTokens: (tokens: IdpTokens) => idpClient.revoke!(tokens), idpTokens: authStores.idpTokens }),
  });
  return { authStores, stepUp, idpClient, endSession };
}

/** The client of `idp.kind`, its module loaded only then (openid-client for OIDC). */
function createIdpClient(idpConfig: NonNullable<Config['idp']>, options: { issuer: string; devMode: boolean; now: () => number }): IdpClient {
  const idpOptions = { redirectUri: `${options.issuer}/oauth/callback`, devMode: options.devMode, now: options.now };
  return idpConfig.kind === 'oauth2'
    ? loadModule<typeof OAuth2Idp>('../idp/oauth2').createOAuth2IdpClient({ config: idpConfig, ...idpOptions })
    : loadModule<typeof OidcIdp>('../idp/oidc').createOidcIdpClient({ config: idpConfig, ...idpOptions });
}
