/**
 * The browser leg of our authorization server, wired into routes:
 *
 *   GET  /oauth/authorize  validate the client's request, park it, send the browser to the IdP
 *   GET  /oauth/callback   the IdP's answer: finish the login, create the session; then either
 *                          issue our code, or show the consent page when this user has not
 *                          approved this client yet
 *   POST /oauth/consent    the consent form: approve (remember it, issue the code) or deny
 *   POST /oauth/register   dynamic client registration (only when enabled)
 *   GET  /oauth/login      a browser-only sign-in that returns to one of our paths (sign-in.ts)
 *
 * Consent comes after the IdP login, not before: the approval is per user and client, and only
 * the IdP tells us reliably who the user is. (Our login cookie could say so earlier, but a
 * cookie from an earlier login must not decide for a login that has not happened yet.)
 */
import type { Route } from '../../http/router.ts';
import { createAuthorizeEndpoint } from './authorize.ts';
import { createCallbackEndpoint } from './callback.ts';
import { createResumeEndpoint } from './connect-chain.ts';
import { createConsentEndpoint } from './consent.ts';
import { createRegistrationEndpoint } from '../clients/register.ts';
import { createSignInEndpoint } from './sign-in.ts';
import type { LoginFlow } from './types.ts';

/** Options of {@link createLoginRoutes}. */
export interface LoginRoutesOptions {
  flow: LoginFlow;
  /** `authServer.registration`: when `dynamic` is false there is no registration endpoint (404). */
  registration: { dynamic: boolean; initialAccessToken: string | null; unusedTtl?: number; maxUnused?: number };
}

/** The routes of the browser leg and of registration. */
export function createLoginRoutes(options: LoginRoutesOptions): Route[] {
  const { flow } = options;
  // Under the issuer's path when the public URL has one (https://host/gw/oauth/authorize).
  const base = new URL(flow.issuer).pathname.replace(/\/+$/, '');
  const routes: Route[] = [
    { method: 'GET', path: `${base}/oauth/authorize`, name: 'authorize', handler: createAuthorizeEndpoint(flow) },
    { method: 'GET', path: `${base}/oauth/callback`, name: 'callback', handler: createCallbackEndpoint(flow) },
    { method: 'POST', path: `${base}/oauth/consent`, name: 'consent', handler: createConsentEndpoint(flow) },
    { method: 'GET', path: `${base}/oauth/login`, name: 'sign-in', handler: createSignInEndpoint(flow) },
  ];
  if (flow.connect) routes.push({ method: 'GET', path: flow.connect.resumePath, name: 'authorize-resume', handler: createResumeEndpoint(flow) });
  if (options.registration.dynamic) {
    routes.push({
      method: 'POST',
      path: `${base}/oauth/register`,
      name: 'register',
      handler: createRegistrationEndpoint({
        stores: flow.stores,
        initialAccessToken: options.registration.initialAccessToken,
        unusedTtlMs: options.registration.unusedTtl,
        maxUnused: options.registration.maxUnused,
        now: flow.now,
        redirectSchemes: flow.redirectSchemes,
      }),
    });
  }
  return routes;
}
