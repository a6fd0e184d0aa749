/**
 * Credentials per mode: each upstream with its connection pool and the credential source its
 * `auth.mode` names.
 */
import { Pool } from 'undici';
import type { EndSession } from '../authserver/records/session-end.ts';
import type { UpstreamConfig } from '../config/schema.ts';
import type * as IdTokenCredential from '../credentials/id-token.ts';
import type { IdpSessionTokens } from '../credentials/idp-session.ts';
import type * as IdpCredential from '../credentials/idp.ts';
import { createNoCredential } from '../credentials/none.ts';
import type * as OAuthCredential from '../credentials/oauth.ts';
import { createStaticCredential } from '../credentials/static.ts';
import type * as TokenExchangeCredential from '../credentials/token-exchange.ts';
import type { CredentialSource } from '../credentials/types.ts';
import type { Upstream } from '../gateway/upstream.ts';
import type { GuardedFetch } from '../net/guarded-fetch.ts';
import type { AppBasics } from './basics.ts';
import { loadModule } from './lazy.ts';
import type { UpstreamOAuth } from './upstream-oauth.ts';

/** Options of {@link assembleUpstreams}. */
export interface UpstreamsOptions {
  basics: AppBasics;
  /** The sessions' IdP tokens; absent without login (the modes that need them then cannot be built). */
  idpSession: IdpSessionTokens | undefined;
  endSession: EndSession;
  upstreamOAuth: UpstreamOAuth;
  serverFetch: GuardedFetch;
}

/** Every configured upstream, as the gateway routes forward to it. */
export function assembleUpstreams(options: UpstreamsOptions): Upstream[] {
  const { config, logger, resourceOf } = options.basics;
  const upstreams: Upstream[] = config.upstreams.map((u) => ({
    name: u.name,
    url: new URL(u.url),
    resource: resourceOf(u.name),
    dispatcher: new Pool(new URL(u.url).origin, {
      keepAliveTimeout: 30_000,
      headersTimeout: config.server.upstreamTimeout,
      bodyTimeout: 0,
      connect: { timeout: Math.min(config.server.upstreamTimeout, 10_000) },
    }),
    credentials: credentialSourceFor(u, options),
  }));
  for (const u of config.upstreams) {
    if (u.auth.mode === 'static' && !config.idp) {
      logger.warn({ msg: 'static credential exposed without login: anyone who reaches the gateway uses it', upstream: u.name });
    }
  }
  return upstreams;
}

/** The credential source of one upstream, by its `auth.mode`; the modules of modes no upstream has are never loaded. */
function credentialSourceFor(u: UpstreamConfig, options: UpstreamsOptions): CredentialSource {
  const { logger, metrics, now, resourceOf, scopesFor } = options.basics;
  const { endSession, serverFetch, upstreamOAuth } = options;
  switch (u.auth.mode) {
    case 'none':
      return createNoCredential(u.name);
    case 'static':
      return createStaticCredential({ upstream: u.name, header: u.auth.header, value: u.auth.value });
    case 'idp':
      return loadModule<typeof IdpCredential>('../credentials/idp').createIdpCredential({
        upstream: { name: u.name, resource: resourceOf(u.name), scopes: scopesFor(u.name) },
        session: idpSession(u, options.idpSession),
        refreshMarginMs: u.auth.refreshMargin,
      });
    case 'id_token':
      return loadModule<typeof IdTokenCredential>('../credentials/id-token').createIdTokenCredential({
        upstream: { name: u.name, resource: resourceOf(u.name), scopes: scopesFor(u.name) },
        session: idpSession(u, options.idpSession),
        endSession,
      });
    case 'token_exchange':
      return loadModule<typeof TokenExchangeCredential>('../credentials/token-exchange').createTokenExchangeCredential({
        upstream: { name: u.name, resource: resourceOf(u.name), scopes: scopesFor(u.name) },
        tokenEndpoint: u.auth.tokenEndpoint,
        subjectToken: u.auth.subjectToken,
        audience: u.auth.audience,
        resource: u.auth.resource,
        scopes: u.auth.scopes,
        extraParams: u.auth.extraParams,
        expectedIssuer: u.auth.expectedIssuer,
        clientId: u.auth.clientId,
        clientSecret: u.auth.clientSecret,
        session: idpSession(u, options.idpSession),
        endSession,
        fetch: serverFetch,
        logger,
        exchanges: metrics.tokenExchanges,
      });
    case 'oauth':
      return loadModule<typeof OAuthCredential>('../credentials/oauth').createOAuthCredential({
        upstream: upstreamOAuth.upstreams.find((o) => o.name === u.name)!,
        flows: upstreamOAuth.flows,
        refreshMarginMs: u.auth.refreshMargin,
        now,
      });
    default: {
      // Every mode of the schema is handled above; a new one must be added here.
      const unhandled: never = u.auth;
      throw new Error(`auth mode "${(unhandled as { mode: string }).mode}" of upstream "${u.name}" is not available in this build`);
    }
  }
}

function idpSession(u: UpstreamConfig, session: IdpSessionTokens | undefined): IdpSessionTokens {
  // The config schema refuses these modes without idp:, so this is a wiring bug if it happens.
  if (!session) throw new Error(`auth mode "${u.auth.mode}" of upstream "${u.name}" needs the idp: section`);
  return session;
}
