/** The development IdP (a real `oidc-provider`) as the tests' company IdP; see `demo/idp.ts`. */
export { startDevIdp, type DevIdp, type DevIdpOptions, type DevIdpUser, type RefreshFailure } from '../../demo/idp.ts';
