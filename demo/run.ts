/**
 * `npm run demo`: the whole product on loopback (see demo/start.ts) and what to do with it.
 * Ctrl+C (or SIGTERM) stops everything and exits 0. `MCPGATE_DEMO_PORT` picks the gateway port
 * (default 8080, or a free one when 8080 is taken).
 */
import { startDemo, type Demo } from './start.ts';

const requested = process.env.MCPGATE_DEMO_PORT;
const demo = await startDemo({ port: requested === undefined || requested === '' ? undefined : Number(requested) });
process.stdout.write(instructions(demo));

function instructions(d: Demo): string {
  const { demo: demoUrl, notes: notesUrl, open: openUrl } = d.mcpUrls;
  const width = Math.max(...d.idp.users.map((u) => u.login.length));
  const users = d.idp.users.map((u) => `    ${u.login.padEnd(width)}  password ${u.password}`).join('\n');
  return `
mcpgate demo is running at ${d.publicUrl.origin} (dev mode, loopback only, nothing kept after Ctrl+C).

MCP endpoints for your agent:
  demo   ${demoUrl.href}    the demo MCP server; it receives your IdP token (auth mode idp)
  notes  ${notesUrl.href}   a server with its own OAuth, connected per user (auth mode oauth)
  open   ${openUrl.href}    the demo MCP server again, sent no credential (auth mode none)

Claude Code:
  claude mcp add --transport http demo ${demoUrl.href}
  claude mcp add --transport http notes ${notesUrl.href}
MCP Inspector: npx @modelcontextprotocol/inspector  (transport "Streamable HTTP", a URL above)

Sign in as (development IdP at ${d.idp.issuer}):
${users}

What to expect:
  1. Your agent's first request opens a browser: sign in to the development IdP with a user above,
     then approve the agent on mcpgate's consent page. Every endpoint needs this login.
  2. demo: call whoami; the demo server shows the IdP user and a hash of the token it received,
     the IdP's, never mcpgate's. Tools: whoami, echo, add, slow_count, notify, ask.
  3. notes: the first tool call answers "Authorization required for notes: open <URL> and then
     retry" (or your agent shows that URL itself). Open it in the same browser, sign in to the
     notes service as ${d.notes.users.join(' or ')} (no password), approve, then call whoami again.

Gateway log lines (JSON) follow. Press Ctrl+C to stop.

`;
}

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
