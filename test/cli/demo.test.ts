/**
 * `npm run demo` (issue 3, "done when"): it prints a URL an SDK client can use, and Ctrl+C stops it.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from '../support/mcp-upstream.ts';
import { connectAgent } from '../gateway/agent.ts';

const RUN = new URL('../../demo/run.ts', import.meta.url).pathname;

describe('npm run demo', () => {
  let child: ChildProcess | undefined;

  after(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  it('serves the demo MCP server through the gateway at the printed URL, and stops on SIGINT', async () => {
    // Port 0: never collide with a developer's demo on 8080.
    const demo = spawn(process.execPath, [RUN], { env: { ...process.env, MCPGATE_DEMO_PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    child = demo;
    let output = '';
    demo.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    demo.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => demo.once('exit', resolve));

    await waitFor(() => /claude mcp add --transport http demo \S+\n/.test(output), `the instructions; output:\n${output}`, 10_000);
    const url = /MCP endpoint for your agent: +(\S+)/.exec(output)![1]!;
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/demo\/mcp$/);
    assert.ok(output.includes(`claude mcp add --transport http demo ${url}\n`));

    const agent = await connectAgent(new URL(url));
    const result = await agent.client.callTool({ name: 'echo', arguments: { text: 'hello demo' } });
    assert.deepEqual(result.content, [{ type: 'text', text: 'hello demo' }]);
    await agent.close();

    demo.kill('SIGINT');
    assert.equal(await exited, 0);
  });
});
