import { getHeapSpaceStatistics } from 'node:v8';
import { createApp } from '../src/app.ts';
import { parseConfig } from '../src/config/load.ts';
import { serveParent } from './children.ts';

/**
 * The gateway under test, as `mcpgate serve` builds it: one upstream in `none` mode, the access
 * log at the given level on stdout (which the bench points at /dev/null, so every line is still
 * formatted and written). Memory figures are reported over IPC, never through the gateway's own
 * routes, so the measurement adds no route to the thing measured.
 *
 * Usage: node --expose-gc bench/gateway.ts <upstream URL> [log level]
 * bench/run.ts runs it compiled (bench/tsconfig.json → .bench-out/build/bench/gateway.js), as
 * the gateway is deployed: Node's type stripping would add some 20 MB to every RSS figure.
 */

const [upstreamUrl, logLevel = 'info'] = process.argv.slice(2);
if (!upstreamUrl) throw new Error('usage: gateway.ts <upstream URL> [log level]');

const config = parseConfig(
  [
    'server:',
    '  listen: "127.0.0.1:0"',
    '  publicUrl: "http://127.0.0.1:8080"',
    '  devMode: true',
    `  logLevel: ${logLevel}`,
    'upstreams:',
    '  - name: bench',
    `    url: "${upstreamUrl}"`,
  ].join('\n'),
  'bench/gateway.ts',
  { env: {}, readFile: () => '' }, // no MCPGATE_* override from the caller's environment
);
const app = createApp(config);
const base = await app.listen({ host: '127.0.0.1', port: 0 });
// A clean exit on SIGTERM, so `--cpu-prof` can write its profile.
process.once('SIGTERM', () => void app.close().then(() => process.exit(0)));

serveParent(
  {
    /** process.memoryUsage() in bytes, after a full collection when `gc` is set (needs --expose-gc). */
    memory: (args) => {
      if (args.gc && typeof globalThis.gc === 'function') {
        globalThis.gc();
        globalThis.gc();
      }
      return process.memoryUsage();
    },
    /** Committed and used bytes of each V8 heap space, to tell what an RSS figure is made of. */
    heapSpaces: () => getHeapSpaceStatistics().map((s) => ({ space: s.space_name, size: s.space_size, used: s.space_used_size })),
    openRequests: () => app.frontDoor.inFlight(),
  },
  new URL('/bench/mcp', base).href,
);
