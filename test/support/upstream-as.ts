/** An MCP server with its own authorization server (a real `oidc-provider`), for the upstream OAuth tests; see `demo/upstream-as.ts`. */
export { startUpstreamWithAs, type RecordedAsRequest, type RecordedRevocation, type UpstreamRegistration, type UpstreamWithAs, type UpstreamWithAsOptions } from '../../demo/upstream-as.ts';
