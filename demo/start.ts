/**
 * What `npm run demo` runs, as a function: the demo MCP server and the gateway in front of it,
 * all on loopback, configured in code. Each part is started here and handed back, so adding one
 * (the development IdP of the next issue) is one more step in {@link startDemo}.
 */
import { createServer } from 'node:net';
import type { DestinationStream } from 'pino';
import { createApp, type App } from '../src/app.ts';
import { parseConfig } from '../src/config/load.ts';
import { processSecretSources } from '../src/config/secrets.ts';
import { startDemoMcpServer, type DemoMcpServer } from './mcp-server.ts';

/** Options of {@link startDemo}. */
export interface DemoOptions {
  /** Gateway port on 127.0.0.1. Default 8080, or any free port when 8080 is taken; 0 always picks a free one. */
  port?: number;
  /** Gateway log level. Default `info` (one JSON line per request). */
  logLevel?: string;
  /** Where gateway log lines go (default stdout). */
  logDestination?: DestinationStream;
}

/** The running demo. */
export interface Demo {
  /** What to give an agent: `http://127.0.0.1:<port>/demo/mcp`. */
  mcpUrl: URL;
  gateway: App;
  upstream: DemoMcpServer;
  /** Stops the gateway (draining open streams for up to 2 s), then the demo server. */
  close(): Promise<void>;
}

const PREFERRED_PORT = 8080;

/** Starts the demo MCP server and the gateway (upstream `demo`, auth mode `none`, dev mode). */
export async function startDemo(options: DemoOptions = {}): Promise<Demo> {
  const upstream = await startDemoMcpServer();
  try {
    const port = await choosePort(options.port ?? PREFERRED_PORT);
    const publicUrl = `http://127.0.0.1:${port}`;
    const raw = {
      server: { listen: `127.0.0.1:${port}`, publicUrl, devMode: true, logLevel: options.logLevel ?? 'info', drainTimeout: '2s' },
      upstreams: [{ name: 'demo', url: upstream.url.href, auth: { mode: 'none' } }],
    };
    // The demo's config is fixed: no environment overrides leak in from the developer's shell.
    const config = parseConfig(JSON.stringify(raw), 'demo config', { env: {}, readFile: processSecretSources.readFile });
    const gateway = createApp(config, { logDestination: options.logDestination });
    await gateway.listen();
    return {
      mcpUrl: new URL('/demo/mcp', publicUrl),
      gateway,
      upstream,
      async close() {
        await gateway.close();
        await upstream.close();
      },
    };
  } catch (error) {
    await upstream.close();
    throw error;
  }
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
