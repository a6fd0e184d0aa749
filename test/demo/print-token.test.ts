/**
 * `npm run demo -- --print-token alice` (README: scripts and CI): the demo logs the user in
 * without a browser and prints one access token per endpoint; a plain MCP client with that
 * bearer token reaches the demo server as alice, and the token is for its own endpoint only.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { decodeJwt } from 'jose';
import type { WhoamiResult } from '../../demo/start.ts';
import { waitFor } from '../support/mcp-upstream.ts';

const RUN = new URL('../../demo/run.ts', import.meta.url).pathname;

function startDemo(args: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [RUN, ...args], { env: { ...process.env, MCPGATE_DEMO_PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  return { child, output: () => output, exited: new Promise((resolve) => child.once('exit', resolve)) };
}

describe('npm run demo -- --print-token', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  });

  it('prints a token per endpoint; an MCP client with it calls whoami as alice', async () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    assert.ok(readme.includes('npm run demo -- --print-token alice'), 'README.md gives the command');
    assert.ok(readme.includes("sed -n 's/^MCPGATE_DEMO_TOKEN_DEMO=//p'"), 'README.md shows how a script reads the token');
    const demo = startDemo(['--print-token', 'alice']);
    children.push(demo.child);
    await waitFor(() => demo.output().includes('Press Ctrl+C to stop.'), `the instructions; output:\n${demo.output()}`, 60_000);
    const base = /mcpgate demo is running at (http:\/\/127\.0\.0\.1:\d+) /.exec(demo.output())?.[1];
    assert.ok(base, demo.output());
    const token = (name: string) => new RegExp(`^MCPGATE_DEMO_TOKEN_${name}=(\\S+)$`, 'm').exec(demo.output())?.[1];
    for (const name of ['DEMO', 'NOTES', 'OPEN']) assert.ok(token(name), `MCPGATE_DEMO_TOKEN_${name} in:\n${demo.output()}`);
    assert.equal(decodeJwt(token('DEMO')!).aud, `${base}/demo/mcp`);
    assert.equal(decodeJwt(token('DEMO')!).iss, base);

    const connect = async (name: string, bearer: string) => {
      const client = new Client({ name: 'ci-script', version: '1' });
      await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/${name}/mcp`), { requestInit: { headers: { authorization: `Bearer ${bearer}` } } }));
      return client;
    };
    const client = await connect('demo', token('DEMO')!);
    try {
      const who = (await client.callTool({ name: 'whoami', arguments: {} })).structuredContent as unknown as WhoamiResult;
      assert.equal(who.verified, true, who.problem);
      assert.equal(who.sub, 'alice');
    } finally {
      await client.close();
    }
    const open = await connect('open', token('OPEN')!);
    await open.close();
    // Audience-bound: the demo endpoint's token does not open another endpoint.
    const refused = await fetch(`${base}/open/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token('DEMO')!}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
    });
    assert.equal(refused.status, 401);

    demo.child.kill('SIGINT');
    assert.equal(await demo.exited, 0);
  });

  it('an unknown user: one clear line and exit 1', async () => {
    const demo = startDemo(['--print-token', 'mallory']);
    children.push(demo.child);
    assert.equal(await demo.exited, 1);
    assert.match(demo.output(), /demo: --print-token: no demo user "mallory" \(the users are alice, bob\)/);
  });
});
