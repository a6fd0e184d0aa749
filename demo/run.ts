/**
 * `npm run demo`: the whole product on loopback (see demo/start.ts) and what to do with it.
 * Ctrl+C (or SIGTERM) stops everything and exits 0. `MCPGATE_DEMO_PORT` picks the gateway port
 * (default 8080, or a free one when 8080 is taken).
 *
 * `npm run demo -- --print-token alice` also logs that user in without a browser (demo/token.ts)
 * and prints an access token per endpoint, as `MCPGATE_DEMO_TOKEN_<NAME>=<token>` lines, for
 * scripts and CI.
 */
import { parseArgs } from 'node:util';
import { startDemo, type Demo, type DemoUpstreamName } from './start.ts';
import { obtainDemoToken } from './token.ts';

const { values: args } = parseArgs({ options: { 'print-token': { type: 'string' } } });
const requested = process.env.MCPGATE_DEMO_PORT;
const demo = await startDemo({ port: requested === undefined || requested === '' ? undefined : Number(requested) });
let tokens = '';
if (args['print-token'] !== undefined) {
  try {
    tokens = await printableTokens(demo, args['print-token']);
  } catch (error) {
    process.stderr.write(`demo: --print-token: ${(error as Error).message}\n`);
    await demo.close();
    process.exit(1);
  }
}
process.stdout.write(instructions(demo, tokens));

/** Logs `login` in once per endpoint (each token is for one resource) and formats the tokens. */
async function printableTokens(d: Demo, login: string): Promise<string> {
  const user = d.idp.users.find((u) => u.login === login);
  if (!user) throw new Error(`no demo user "${login}" (the users are ${d.idp.users.map((u) => u.login).join(', ')})`);
  const lines: string[] = [];
  let lifetime = 0;
  for (const name of Object.keys(d.mcpUrls) as DemoUpstreamName[]) {
    const token = await obtainDemoToken({ issuer: d.publicUrl.origin, resource: d.mcpUrls[name].href, user });
    lifetime = token.expiresIn;
    lines.push(`MCPGATE_DEMO_TOKEN_${name.toUpperCase()}=${token.accessToken}`);
  }
  return `
Access tokens for ${login}, one per endpoint (a scripted login through the development IdP and the
consent page; each valid ${Math.round(lifetime / 60)} minutes, only for its own endpoint; send it as
"Authorization: Bearer <token>"):
${lines.join('\n')}
`;
}

function instructions(d: Demo, tokens: string): string {
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
  Scripts and CI: \`npm run demo -- --print-token alice\` prints access tokens without a browser.
${tokens}
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
