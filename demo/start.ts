/**
 * What `npm run demo` runs, as a function: the whole product on loopback, configured in code.
 *
 * - a development IdP (a real `oidc-provider`) standing in for the company IdP;
 * - the demo MCP server, served twice: as upstream `demo` in mode `idp` (the gateway forwards the
 *   IdP's access token of the user's session, never its own) and as upstream `open` in mode
 *   `none` (no upstream credential at all). Its extra `whoami` tool verifies the IdP token it
 *   received and says whose it is, so the swap can be seen from the upstream's side;
 * - `notes`: an MCP server with its OWN authorization server (a second, unrelated
 *   `oidc-provider`), in mode `oauth`: mcpgate registers itself there by DCR and each user
 *   connects once through the auth_required link;
 * - the gateway in front of all three: dev mode, an ephemeral signing key, memory storage.
 *
 * Each part is started here and handed back; {@link Demo.close} stops them in reverse order.
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:net';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import type { DestinationStream } from 'pino';
import { z } from 'zod';
import { createApp, type App } from '../src/app.ts';
import { parseConfig } from '../src/config/load.ts';
import { processSecretSources } from '../src/config/secrets.ts';
import { startDevIdp, type DevIdp } from './idp.ts';
import { createDemoMcpServer, startDemoMcpServer, type DemoMcpServer } from './mcp-server.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from './upstream-as.ts';

/** Options of {@link startDemo}. */
export interface DemoOptions {
  /** Gateway port on 127.0.0.1. Default 8080, or any free port when 8080 is taken; 0 always picks a free one. */
  port?: number;
  /** Gateway log level. Default `info` (one JSON line per request). */
  logLevel?: string;
  /** Where gateway log lines go (default stdout). */
  logDestination?: DestinationStream;
}

/** The upstreams the demo configures, by name (each served at `/{name}/mcp`). */
export type DemoUpstreamName = 'demo' | 'notes' | 'open';

/** The running demo. */
export interface Demo {
  /** The gateway's public URL and issuer, `http://127.0.0.1:<port>`. */
  publicUrl: URL;
  /** What to give an agent, per upstream: `http://127.0.0.1:<port>/<name>/mcp`. */
  mcpUrls: Record<DemoUpstreamName, URL>;
  /** The same as `mcpUrls.demo`. */
  mcpUrl: URL;
  gateway: App;
  /** The company IdP stand-in; its `users` carry the passwords to sign in with. */
  idp: DevIdp;
  /** The demo MCP server behind upstreams `demo` and `open`. */
  upstream: DemoMcpServer;
  /** The MCP server with its own authorization server, behind upstream `notes`. */
  notes: UpstreamWithAs;
  /** Stops the gateway (draining open streams for up to 2 s), then every server behind it. */
  close(): Promise<void>;
}

/** What the `whoami` tool answers: who the Authorization header the demo server received belongs to. */
export interface WhoamiResult {
  /** An Authorization header arrived at the demo server. */
  credential: boolean;
  /** It was a JWT access token of the development IdP, for its upstream audience (signature, issuer, audience, expiry checked). */
  verified: boolean;
  /** The token's subject (the IdP user), when verified. */
  sub?: string;
  /** The token's issuer, when verified. */
  issuer?: string;
  /** The first 12 hex digits of the token's SHA-256: enough to tell tokens apart, useless to replay one. */
  sha256Prefix?: string;
  /** Why verification failed, when it did. */
  problem?: string;
}

const PREFERRED_PORT = 8080;
const IDP_SECRET_ENV = 'MCPGATE_DEMO_IDP_CLIENT_SECRET';

/** Starts the development IdP, the upstreams and the gateway; see the module comment. */
export async function startDemo(options: DemoOptions = {}): Promise<Demo> {
  // Closed in reverse order of start, also when a later step fails.
  const started: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of started.splice(0).reverse()) await stop().catch(() => undefined);
  };
  try {
    const idp = await startDevIdp();
    started.push(() => idp.close());
    const upstream = await startDemoMcpServer({ mcpServer: demoServerWithWhoami(idp) });
    started.push(() => upstream.close());
    // openHandshake: the notes server lets `initialize` through without a token, so an agent
    // connects first and meets auth_required on its first tool call (the tool-result channel).
    const notes = await startUpstreamWithAs({ registration: 'dcr', openHandshake: true });
    started.push(() => notes.close());

    // Chosen last, so the servers above (each on a free port) cannot take it before the gateway binds.
    const port = await choosePort(options.port ?? PREFERRED_PORT);
    const publicUrl = new URL(`http://127.0.0.1:${port}`);
    const raw = {
      server: { listen: `127.0.0.1:${port}`, publicUrl: publicUrl.origin, devMode: true, logLevel: options.logLevel ?? 'info', drainTimeout: '2s' },
      idp: { issuer: idp.issuer, clientId: idp.clientId, clientSecret: `env:${IDP_SECRET_ENV}` },
      // No signing or encryption keys: dev mode makes ephemeral ones, and memory storage dies with the process.
      storage: { kind: 'memory' },
      upstreams: [
        { name: 'demo', url: upstream.url.href, auth: { mode: 'idp' } },
        { name: 'notes', url: notes.mcpUrl, auth: { mode: 'oauth', scopes: ['notes:read'], challenge: 'auto' } },
        { name: 'open', url: upstream.url.href, auth: { mode: 'none' } },
      ],
    };
    // The demo's config is fixed: no environment overrides leak in from the developer's shell.
    const config = parseConfig(JSON.stringify(raw), 'demo config', {
      env: { [IDP_SECRET_ENV]: idp.clientSecret },
      readFile: processSecretSources.readFile,
    });
    const gateway = createApp(config, { logDestination: options.logDestination });
    await gateway.listen();
    started.push(() => gateway.close());

    const mcpUrls = {
      demo: new URL('/demo/mcp', publicUrl),
      notes: new URL('/notes/mcp', publicUrl),
      open: new URL('/open/mcp', publicUrl),
    };
    return { publicUrl, mcpUrls, mcpUrl: mcpUrls.demo, gateway, idp, upstream, notes, close: stopAll };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/**
 * The demo MCP server of each session, plus `whoami`: it checks the Authorization header of the
 * request that called it as an upstream that trusts the IdP would (the IdP's JWKS, issuer,
 * audience, expiry) and tells whose token it is. It shows a hash prefix, never the token.
 */
function demoServerWithWhoami(idp: DevIdp): () => McpServer {
  const jwks = createRemoteJWKSet(new URL(idp.jwksUri));
  const outputSchema = {
    credential: z.boolean(),
    verified: z.boolean(),
    sub: z.string().optional(),
    issuer: z.string().optional(),
    sha256Prefix: z.string().optional(),
    problem: z.string().optional(),
  };
  return () => {
    const server = createDemoMcpServer();
    server.registerTool(
      'whoami',
      { description: 'Shows whose credential reached the demo server (the IdP user of a verified token), never the token itself.', outputSchema },
      async (extra) => {
        const authorization = extra.requestInfo?.headers['authorization'];
        const header = Array.isArray(authorization) ? authorization[0] : authorization;
        const result = await identify(header, jwks, idp);
        return { content: [{ type: 'text', text: describe(result) }], structuredContent: { ...result } };
      },
    );
    return server;
  };
}

async function identify(header: string | undefined, jwks: ReturnType<typeof createRemoteJWKSet>, idp: DevIdp): Promise<WhoamiResult> {
  if (header === undefined) return { credential: false, verified: false };
  const token = /^Bearer (.+)$/i.exec(header)?.[1] ?? '';
  const sha256Prefix = createHash('sha256').update(token || header).digest('hex').slice(0, 12);
  try {
    const { payload } = await jwtVerify(token, jwks, { issuer: idp.issuer, audience: idp.audience });
    return { credential: true, verified: true, sub: String(payload.sub), issuer: String(payload.iss), sha256Prefix };
  } catch (error) {
    return { credential: true, verified: false, sha256Prefix, problem: (error as Error).message };
  }
}

function describe(result: WhoamiResult): string {
  if (!result.credential) return 'No credential reached the demo server: this upstream is in auth mode "none".';
  if (!result.verified) return `A credential reached the demo server (sha256 ${result.sha256Prefix}…) but it is not a valid IdP token: ${result.problem}.`;
  return [
    `The demo server received an access token of the development IdP for user "${result.sub}"`,
    `(issuer ${result.issuer}, sha256 ${result.sha256Prefix}…): mcpgate swapped its own token for the IdP's.`,
  ].join(' ');
}

/** `preferred` when it can be bound on loopback right now, else a free port (0 always means "any"). */
async function choosePort(preferred: number): Promise<number> {
  const tryBind = (port: number) =>
    new Promise<number | undefined>((resolve) => {
      const probe = createServer();
      probe.once('error', () => resolve(undefined));
      probe.listen(port, '127.0.0.1', () => {
        const bound = (probe.address() as { port: number }).port;
        probe.close(() => resolve(bound));
      });
    });
  if (preferred !== 0) {
    const port = await tryBind(preferred);
    if (port !== undefined) return port;
  }
  const any = await tryBind(0);
  if (any === undefined) throw new Error('no free port on 127.0.0.1');
  return any;
}
