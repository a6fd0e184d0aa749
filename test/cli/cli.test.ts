/**
 * The `mcpgate` command as an operator runs it: `--version`, `--help`, `check`
 * (exit 1 with every problem), and `serve` answering `/healthz` and draining an open SSE stream
 * on SIGTERM before it exits 0.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../support/gateway.ts';
import { startRawUpstream, waitFor, type RawUpstream } from '../support/mcp-upstream.ts';

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Runs the CLI to completion. */
function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

describe('mcpgate CLI', { concurrency: true }, () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mcpgate-cli-'));
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  function configFile(name: string, text: string): string {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  }

  it('--version prints the package version', async () => {
    const { code, stdout } = await run(['--version']);
    assert.equal(code, 0);
    assert.equal(stdout, `${VERSION}\n`);
  });

  it('--help prints the usage; an unknown command or a missing --config is a usage error', async () => {
    const help = await run(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /mcpgate serve --config FILE/);
    assert.match(help.stdout, /mcpgate check --config FILE/);

    const unknown = await run(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);

    const noConfig = await run(['check'], { MCPGATE_CONFIG: '' });
    assert.equal(noConfig.code, 2);
    assert.match(noConfig.stderr, /--config FILE is required/);
  });

  it('check: exit 0 for a valid file', async () => {
    const path = configFile('ok.yaml', 'server:\n  publicUrl: "https://mcp.example.com"\nupstreams:\n  - { name: kube, url: "http://kube-mcp:8080/mcp" }\n');
    const { code, stdout } = await run(['check', '--config', path]);
    assert.equal(code, 0);
    assert.equal(stdout, `${path}: ok (1 upstream)\n`);
  });

  it('check: exit 1 and every problem printed with its path for a bad file', async () => {
    const path = configFile(
      'bad.yaml',
      [
        'server:',
        '  publicUrl: "http://mcp.example.com"',
        '  maxBodyBytes: "lots"',
        'upstreams:',
        '  - { name: "Kube", url: "http://kube-mcp:8080/mcp" }',
        '  - { name: search, url: "https://search/mcp", auth: { mode: static, value: "inline-secret-value" } }',
        '',
      ].join('\n'),
    );
    const { code, stdout, stderr } = await run(['check', '--config', path]);
    assert.equal(code, 1);
    assert.equal(stdout, '');
    assert.match(stderr, new RegExp(`invalid configuration in ${path}`));
    for (const problem of ['server.publicUrl: ', 'server.maxBodyBytes: ', 'upstreams[0].name: ', 'upstreams[1].auth.value: ']) {
      assert.ok(stderr.includes(`  - ${problem}`), `${problem} in:\n${stderr}`);
    }
    assert.ok(!stderr.includes('inline-secret-value'), 'an inline secret is not echoed');

    const missing = await run(['check', '--config', join(dir, 'missing.yaml')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read \(ENOENT\)/);
  });

  describe('serve', () => {
    let upstream: RawUpstream;
    let releaseStream: () => void = () => undefined;
    let child: ChildProcess | undefined;

    before(async () => {
      const released = new Promise<void>((resolve) => (releaseStream = resolve));
      upstream = await startRawUpstream(async (req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        if (req.method === 'GET') {
          // The standalone stream never ends by itself; at SIGTERM the upstream is in the middle of event 2.
          res.write('id: 1\ndata: {"n":1}\n\nid: 2\ndata: {"n":');
          await released;
          res.write('2}\n\nid: 3\ndata: {"n":3}\n\n');
          return;
        }
        // A POST's stream: the answer to a request in flight.
        res.write('id: 1\ndata: {"p":1}\n\n');
        await released; // the rest comes only after the gateway was told to stop
        res.write('id: 2\ndata: {"p":2}\n\n');
        res.end('id: 3\ndata: {"p":3}\n\n');
      });
    });

    after(async () => {
      if (child && child.exitCode === null) child.kill('SIGKILL');
      await upstream.close();
    });

    it('on SIGTERM stops accepting, ends the GET stream after a whole event, lets the POST stream finish, then exits 0', async () => {
      const port = await freePort();
      const path = configFile(
        'serve.yaml',
        [
          'server:',
          `  listen: "127.0.0.1:${port}"`,
          `  publicUrl: "http://127.0.0.1:${port}"`,
          '  devMode: true',
          '  drainTimeout: "20s"',
          'upstreams:',
          `  - { name: up, url: "${upstream.url.href}" }`,
          '',
        ].join('\n'),
      );
      const server = spawn(process.execPath, [CLI, 'serve', '--config', path], { stdio: ['ignore', 'pipe', 'pipe'] });
      child = server;
      let logs = '';
      server.stdout.on('data', (chunk: Buffer) => (logs += chunk.toString('utf8')));
      server.stderr.on('data', (chunk: Buffer) => (logs += chunk.toString('utf8')));
      const exited = new Promise<number | null>((resolve) => server.once('exit', resolve));
      const events: string[] = [];
      server.once('exit', () => events.push('exit'));

      await waitFor(() => logs.includes('"msg":"listening"'), `the gateway to listen; output:\n${logs}`, 30_000); // slow when the other CLI tests start several gateways at once
      const base = `http://127.0.0.1:${port}`;
      assert.equal((await fetch(`${base}/healthz`)).status, 200);

      /** Opens a stream through the gateway; `body` grows as it arrives. */
      const open = (method: 'GET' | 'POST', name: string) => {
        const stream = { body: '', ended: undefined as unknown as Promise<boolean> };
        stream.ended = new Promise<boolean>((resolve, reject) => {
          const req = request(
            `${base}/up/mcp`,
            { method, headers: { accept: 'text/event-stream, application/json', 'content-type': 'application/json', 'mcp-session-id': 's' }, agent: false },
            (res) => {
              res.setEncoding('utf8');
              res.on('data', (chunk: string) => (stream.body += chunk));
              res.on('end', () => {
                events.push(`${name} end`);
                resolve(res.complete);
              });
              res.on('error', reject);
            },
          );
          req.on('error', reject);
          req.end(method === 'POST' ? '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}' : undefined);
        });
        return stream;
      };
      const getStream = open('GET', 'get');
      const postStream = open('POST', 'post');
      await waitFor(() => getStream.body.includes('{"n":') && postStream.body.includes('"p":1'), 'the first events');

      server.kill('SIGTERM');
      await waitFor(() => logs.includes('"msg":"shutting down"'), 'the shutdown to start');
      // Not ready at once, and stopped accepting: a new connection is refused while the streams are open.
      let refused = false;
      for (let i = 0; i < 100 && !refused; i++) {
        refused = await fetch(`${base}/healthz`).then(
          () => false,
          () => true,
        );
        if (!refused) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.ok(refused, 'the listener is closed during the drain');
      assert.equal(server.exitCode, null, 'the process waits for the open streams');
      assert.ok(!events.includes('get end'), 'the GET stream waits for the end of the event under way');

      releaseStream();
      assert.equal(await getStream.ended, true, 'the GET stream ended cleanly');
      assert.equal(getStream.body, 'id: 1\ndata: {"n":1}\n\nid: 2\ndata: {"n":2}\n\n', 'it ended right after a whole event, never inside one');
      assert.equal(await postStream.ended, true, 'the POST stream finished normally');
      assert.match(postStream.body, /"p":1[\s\S]*"p":2[\s\S]*"p":3/, 'events sent after SIGTERM still reached the agent');
      assert.equal(await exited, 0);
      assert.deepEqual(events.slice(-1), ['exit']);
      assert.match(logs, /"msg":"stopped"/);
    });
  });
});
