/**
 * `npm run demo`: the gateway in front of a demo MCP server, on loopback, with the URL to give
 * an agent. Ctrl+C stops both. `MCPGATE_DEMO_PORT` picks the gateway port (default 8080, or a
 * free one when 8080 is taken).
 */
import { startDemo } from './start.ts';

const requested = process.env.MCPGATE_DEMO_PORT;
const demo = await startDemo({ port: requested === undefined || requested === '' ? undefined : Number(requested) });
const url = demo.mcpUrl.href;

process.stdout.write(`
mcpgate demo is running.

  MCP endpoint for your agent:  ${url}
  Claude Code:                  claude mcp add --transport http demo ${url}
  MCP Inspector:                npx @modelcontextprotocol/inspector  (transport "Streamable HTTP", URL above)
  The demo server, direct:      ${demo.upstream.url.href}

  Tools: echo, add, slow_count (progress), notify (log + list_changed), ask (elicitation)

Press Ctrl+C to stop.
`);

let stopping = false;
const stop = (signal: NodeJS.Signals) => {
  if (stopping) process.exit(1); // a second Ctrl+C does not wait
  stopping = true;
  process.stdout.write(`\n${signal}: stopping the demo…\n`);
  demo.close().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`demo: ${(error as Error).message}\n`);
      process.exit(1);
    },
  );
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
