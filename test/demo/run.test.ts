/**
 * `npm run demo` as a person runs it (issues 3–5, "done when"): `node demo/run.ts` prints the
 * endpoints to give an agent, the `claude mcp add` lines and the users to sign in as; the printed
 * endpoints are protected resources of the gateway; Ctrl+C stops everything with exit code 0.
 * (The login and the calls through them: demo.test.ts, on `startDemo` itself.)
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from '../support/mcp-upstream.ts';

const RUN = new URL('../../demo/run.ts', import.meta.url).pathname;

describe('npm run demo', () => {
  let child: ChildProcess | undefined;

  after(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  it('prints the endpoints, the claude mcp add lines and the users; the endpoints ask for our login; SIGINT exits 0', async () => {
    // Port 0: never collide with a developer's demo on 8080.
    const demo = spawn(process.execPath, [RUN], { env: { ...process.env, MCPGATE_DEMO_PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    child = demo;
    let output = '';
    demo.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    demo.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => demo.once('exit', resolve));

    await waitFor(() => output.includes('Press Ctrl+C to stop.'), `the instructions; output:\n${output}`, 15_000);
    const base = /mcpgate demo is running at (http:\/\/127\.0\.0\.1:\d+) /.exec(output)?.[1];
    assert.ok(base, output);
    for (const name of ['demo', 'notes', 'open']) {
      assert.match(output, new RegExp(`^  ${name} +${base}/${name}/mcp `, 'm'));
    }
    for (const name of ['demo', 'notes']) assert.ok(output.includes(`claude mcp add --transport http ${name} ${base}/${name}/mcp\n`), output);
    assert.match(output, /^ {4}alice +password \S+$/m);
    assert.match(output, /^ {4}bob +password \S+$/m);

    // What an agent meets first: 401 naming the resource metadata, which names our authorization server.
    const res = await fetch(`${base}/demo/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
    });
    assert.equal(res.status, 401);
    const metadataUrl = /resource_metadata="([^"]+)"/.exec(res.headers.get('www-authenticate') ?? '')?.[1];
    assert.equal(metadataUrl, `${base}/.well-known/oauth-protected-resource/demo/mcp`);
    const metadata = (await (await fetch(metadataUrl)).json()) as { resource: string; authorization_servers: string[] };
    assert.deepEqual(metadata.authorization_servers, [base]);
    assert.equal(metadata.resource, `${base}/demo/mcp`);

    demo.kill('SIGINT');
    assert.equal(await exited, 0);
  });
});
