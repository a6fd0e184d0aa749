/**
 * Fixtures for the auth_required channel tests: a real SDK MCP server as the upstream (it only
 * accepts its own bearer token, except for the session handshake) and the gateway path assembled
 * the way app.ts assembles it, with a credential source that raises auth_required until the
 * test "connects" the user.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { Pool } from 'undici';
import type { CredentialSource, Principal } from '../../src/credentials/types.ts';
import type { Authenticator } from '../../src/gateway/authenticate.ts';
import { createAuthRequiredRenderer, type ChallengeSetting } from '../../src/gateway/challenge.ts';
import { createClientCapabilities, type ClientCapabilities } from '../../src/gateway/client-capabilities.ts';
import { createMcpRoutes } from '../../src/gateway/mcp-route.ts';
import { createStreamRegistry, type StreamRegistry } from '../../src/gateway/stream-registry.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import type { Upstream } from '../../src/gateway/upstream.ts';
import { createFrontDoor, type FrontDoor } from '../../src/http/server.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createGatewayMetrics, createRegistry } from '../../src/observability/metrics.ts';
import { AuthRequiredError, connectScopeFor, type AuthRequired } from '../../src/upstream-oauth/auth-required.ts';

export const UPSTREAM_TOKEN = 'upstream-own-token';

/** A real SDK MCP server over Streamable HTTP, sessions on, that records every Authorization header it saw. */
export interface TestUpstream {
  url: URL;
  seenAuthorization: (string | undefined)[];
  close(): Promise<void>;
}

/**
 * `open: true` lets `initialize` and notifications through without a token (the upstream answers
 * 401 to everything else without its token); `open: false` needs its token for everything.
 */
export async function startUpstream(options: { open: boolean }): Promise<TestUpstream> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const seenAuthorization: (string | undefined)[] = [];

  function newSession(): StreamableHTTPServerTransport {
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => void transports.set(id, transport),
    });
    const server = new McpServer({ name: 'upstream', version: '1.0.0' });
    server.registerTool('whoami', { description: 'says hello' }, async () => ({ content: [{ type: 'text', text: 'hello from upstream' }] }));
    server.registerResource('readme', 'test://readme', { description: 'a resource' }, async (uri) => ({ contents: [{ uri: uri.href, text: 'readme' }] }));
    void server.connect(transport);
    return transport;
  }

  const server = createServer((req, res) => void handle(req, res));
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    seenAuthorization.push(req.headers.authorization);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
    const handshake = req.method === 'POST' && (body?.method === 'initialize' || (body && body.id === undefined));
    if (req.headers.authorization !== `Bearer ${UPSTREAM_TOKEN}` && !(options.open && handshake)) {
      res.writeHead(401, { 'www-authenticate': 'Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource"', 'content-type': 'application/json' });
      res.end('{"error":"invalid_token"}');
      return;
    }
    const sessionId = req.headers['mcp-session-id'];
    const transport = typeof sessionId === 'string' ? transports.get(sessionId) : newSession();
    if (!transport) {
      res.writeHead(404).end();
      return;
    }
    await transport.handleRequest(req, res, body);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: new URL(`http://127.0.0.1:${port}/mcp`),
    seenAuthorization,
    async close() {
      await Promise.all([...transports.values()].map((t) => t.close().catch(() => undefined)));
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The principal every request authenticates as (the JWT authenticator is issue 4's, tested there). */
export const PRINCIPAL: Principal = { subject: 'alice', sessionId: 'sid-alice', clientId: 'agent', scopes: ['openid', 'mcp'], expiresAt: 4_102_444_800 };

const fixedPrincipal: Authenticator = { authenticate: async () => PRINCIPAL };

/** A credential source standing in for mode `oauth`: no token until `connected`. */
export interface TestCredential extends CredentialSource {
  connected: boolean;
  readonly authRequired: AuthRequired;
}

/**
 * `throwing: true` raises auth_required from `headers()` (no token at all); otherwise it sends no
 * Authorization header and raises it from `rejected()` when the upstream answers 401.
 */
export function testCredential(upstream: string, baseUrl: () => string, throwing: boolean): TestCredential {
  const elicitationId = randomUUID();
  const credential: TestCredential = {
    mode: 'oauth',
    connected: false,
    get authRequired(): AuthRequired {
      return {
        upstream,
        authUrl: `${baseUrl()}/oauth/upstream/start?flow=${elicitationId}`,
        elicitationId,
        message: `Authorize access to ${upstream}, then retry.`,
        connectScope: connectScopeFor(upstream),
        flowId: elicitationId,
      };
    },
    async headers(): Promise<Record<string, string>> {
      if (credential.connected) return { authorization: `Bearer ${UPSTREAM_TOKEN}` };
      if (throwing) throw new AuthRequiredError(credential.authRequired);
      return {};
    },
    async rejected() {
      return { action: 'respond', error: new AuthRequiredError(credential.authRequired) };
    },
  };
  return credential;
}

/** The gateway path with auth_required rendering, as app.ts wires it. */
export interface TestGateway {
  url: URL;
  capabilities: ClientCapabilities;
  streams: StreamRegistry;
  close(): Promise<void>;
}

export async function startGateway(upstreams: { name: string; url: URL; credentials: CredentialSource; challenge?: ChallengeSetting }[]): Promise<TestGateway> {
  const logger = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
  const metrics = createGatewayMetrics(createRegistry());
  const capabilities = createClientCapabilities({ store: createMemoryStore() });
  const streams = createStreamRegistry();
  const settings = new Map(upstreams.map((u) => [u.name, u.challenge ?? 'auto']));
  let publicUrl = new URL('http://127.0.0.1/');
  const list: Upstream[] = upstreams.map((u) => ({
    name: u.name,
    url: u.url,
    get resource() {
      return `${publicUrl.origin}/${u.name}/mcp`;
    },
    dispatcher: new Pool(u.url.origin),
    credentials: u.credentials,
  }));
  const routes = createMcpRoutes({
    upstreams: list,
    authenticator: fixedPrincipal,
    logger,
    metrics,
    publicOrigin: 'http://127.0.0.1',
    allowedOrigins: [],
    maxBodyBytes: 1 << 20,
    upstreamTimeoutMs: 10_000,
    basePath: '',
    authRequired: createAuthRequiredRenderer({ capabilities, streams, settingFor: (name) => settings.get(name) ?? 'auto' }),
    clientCapabilities: capabilities,
    streams,
  });
  const frontDoor: FrontDoor = createFrontDoor({ routes, logger, metrics, publicUrl, trustedProxies: [] });
  const bound = await frontDoor.listen('127.0.0.1', 0);
  publicUrl = new URL(`http://127.0.0.1:${bound.port}`);
  return {
    url: publicUrl,
    capabilities,
    streams,
    async close() {
      await frontDoor.shutdown(0);
      await Promise.all(list.map((u) => u.dispatcher.close()));
    },
  };
}
