/**
 * Transparency (issue 3): the official `@modelcontextprotocol/conformance` server scenarios,
 * run against an MCP server directly and through the gateway, give the same result for every
 * check of every scenario. The server implements what the scenarios ask for, so they pass.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startDemoMcpServer, type DemoMcpServer } from '../../demo/mcp-server.ts';
import { startGateway, type TestGateway } from '../support/gateway.ts';
import { createConformanceMcpServer } from './conformance-server.ts';

const CONFORMANCE_CLI = join(dirname(createRequire(import.meta.url).resolve('@modelcontextprotocol/conformance/package.json')), 'dist', 'index.js');

/** Per scenario, each check's id and status, in the order reported. */
type Results = Map<string, string[]>;

/** Runs the active server suite against `url`; resolves with its per-scenario results. */
async function runConformance(url: URL, outputDir: string): Promise<{ code: number | null; results: Results; output: string }> {
  const child = spawn(process.execPath, [CONFORMANCE_CLI, 'server', '--url', url.href, '-o', outputDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const results: Results = new Map();
  for (const entry of readdirSync(outputDir)) {
    const scenario = entry.replace(/^server-/, '').replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, '');
    const checks = JSON.parse(readFileSync(join(outputDir, entry, 'checks.json'), 'utf8')) as Array<{ id: string; status: string }>;
    results.set(scenario, checks.map((c) => `${c.id}: ${c.status}`));
  }
  return { code, results, output };
}

describe('conformance scenarios, directly and through the gateway', () => {
  let upstream: DemoMcpServer;
  let gateway: TestGateway;
  const dirs: string[] = [];

  before(async () => {
    upstream = await startDemoMcpServer({ mcpServer: createConformanceMcpServer });
    gateway = await startGateway({ upstreams: [{ name: 'everything', url: upstream.url }] });
  });

  after(async () => {
    await gateway.close();
    await upstream.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('gives the same result per scenario and per check', async (t) => {
    const outputDir = () => {
      const dir = mkdtempSync(join(tmpdir(), 'mcpgate-conformance-'));
      dirs.push(dir);
      return dir;
    };
    const [direct, proxied] = await Promise.all([runConformance(upstream.url, outputDir()), runConformance(gateway.mcpUrl('everything'), outputDir())]);

    assert.equal(direct.code, 0, `every scenario passes against the server itself:\n${direct.output.slice(-3000)}`);
    assert.ok(direct.results.size >= 30, `the active server suite ran (${direct.results.size} scenarios)`);
    assert.deepEqual(
      Object.fromEntries([...proxied.results].sort()),
      Object.fromEntries([...direct.results].sort()),
      'each scenario\'s checks have the same outcome through the gateway',
    );
    assert.equal(proxied.code, 0, proxied.output.slice(-3000));
    const checks = [...proxied.results.values()].reduce((n, list) => n + list.length, 0);
    t.diagnostic(`${proxied.results.size} scenarios, ${checks} checks: identical and passing through the gateway`);
  });
});
