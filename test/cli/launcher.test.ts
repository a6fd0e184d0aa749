/**
 * The commands README.md gives for running the CLI, run as written: `npx mcpgate …` in a checkout
 * after `npm install`, `node bin/mcpgate.js …`, and the built package installed under
 * node_modules (`npm run build`, then its `bin`). An old Node gets one line naming the version
 * required, from the launcher and from `dist/cli.js` itself, instead of a stack trace from undici.
 *
 * The old Node is the system's `/usr/bin/node` when it is older than `engines.node` (Debian's
 * Node 20 on the CI image). Where there is no such binary, the same code is still exercised: a
 * copy of the launcher and of the built CLI next to a package.json that requires a Node newer
 * than the one running the test.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string; bin: Record<string, string>; engines: { node: string } };
const REQUIRED = /^>=(\S+)$/.exec(PKG.engines.node)![1]!;
const SYSTEM_NODE = '/usr/bin/node';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): Promise<Run> {
  const child = spawn(command, args, { cwd: options.cwd ?? REPO, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The version a node binary reports, or undefined when it does not exist. */
function versionOf(binary: string): Promise<string | undefined> {
  if (!existsSync(binary)) return Promise.resolve(undefined);
  return new Promise((resolve) => execFile(binary, ['-p', 'process.versions.node'], (error, stdout) => resolve(error ? undefined : stdout.trim())));
}

function older(version: string, than: string): boolean {
  const a = version.split('.').map(Number);
  const b = than.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) < (b[i] ?? 0);
  return false;
}

/** The exact line both guards print. */
function oldNodeLine(required: string, version: string, binary: string): string {
  return `mcpgate: Node.js ${required} or newer is required, this is ${version} (${binary})\n`;
}

describe('running the mcpgate command', { concurrency: true }, () => {
  let dir: string;
  let config: string;
  /** `<dir>/app/node_modules/mcpgate`: the package as npm installs it (bin/, dist/, package.json). */
  let installed: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mcpgate-launcher-'));
    config = join(dir, 'ok.yaml');
    writeFileSync(config, 'server:\n  publicUrl: "https://mcp.example.com"\nupstreams:\n  - { name: kube, url: "http://kube-mcp:8080/mcp" }\n');
    // `npm run build`, into the installed copy (the same tsc and tsconfig.build.json).
    installed = join(dir, 'app', 'node_modules', 'mcpgate');
    mkdirSync(installed, { recursive: true });
    const build = await run(process.execPath, [join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(REPO, 'tsconfig.build.json'), '--outDir', join(installed, 'dist')]);
    assert.equal(build.code, 0, `tsc: ${build.stdout}${build.stderr}`);
    copyFileSync(join(REPO, 'package.json'), join(installed, 'package.json'));
    cpSync(join(REPO, 'bin'), join(installed, 'bin'), { recursive: true });
    // Its dependencies, where an install would put them.
    symlinkSync(join(REPO, 'node_modules'), join(installed, 'node_modules'));
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it('the package bin is bin/mcpgate.js, executable, and shipped', () => {
    assert.deepEqual(PKG.bin, { mcpgate: 'bin/mcpgate.js' });
    assert.ok((readFileSync(join(REPO, 'bin', 'mcpgate.js'), 'utf8')).startsWith('#!/usr/bin/env node\n'));
    assert.ok(((JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { files: string[] }).files).includes('bin'));
    const lock = JSON.parse(readFileSync(join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { bin?: unknown; engines?: unknown }> };
    assert.deepEqual(lock.packages['']!.bin, PKG.bin, 'package-lock.json agrees with package.json (npm install would rewrite it otherwise)');
    assert.deepEqual(lock.packages['']!.engines, PKG.engines, 'package-lock.json agrees with package.json (npm install would rewrite it otherwise)');
    // git keeps the mode; npm runs the bin through sh, which needs the x bit.
    return new Promise<void>((resolve, reject) =>
      execFile('git', ['ls-files', '-s', 'bin/mcpgate.js'], { cwd: REPO }, (error, stdout) => {
        if (error) return reject(error);
        try {
          assert.match(stdout, /^100755 /, 'bin/mcpgate.js is committed executable');
          resolve();
        } catch (failure) {
          reject(failure as Error);
        }
      }),
    );
  });

  it('npx mcpgate check --config FILE, in the checkout (README)', async () => {
    const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
    assert.match(readme, /^npx mcpgate check --config mcpgate\.yaml /m, 'README.md gives this command');
    const version = await run('npx', ['mcpgate', '--version']);
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout, `${PKG.version}\n`);
    const check = await run('npx', ['mcpgate', 'check', '--config', config]);
    assert.equal(check.code, 0, check.stderr);
    assert.equal(check.stdout, `${config}: ok (1 upstream)\n`);
  });

  it('node bin/mcpgate.js check --config FILE runs src/cli.ts in a checkout', async () => {
    const check = await run(process.execPath, ['bin/mcpgate.js', 'check', '--config', config]);
    assert.equal(check.code, 0, check.stderr);
    assert.equal(check.stdout, `${config}: ok (1 upstream)\n`);
  });

  it('installed under node_modules, the bin runs the built dist/cli.js', async () => {
    const check = await run(process.execPath, [join(installed, 'bin', 'mcpgate.js'), 'check', '--config', config], { cwd: dir });
    assert.equal(check.code, 0, check.stderr);
    assert.equal(check.stdout, `${config}: ok (1 upstream)\n`);
    // Without dist/ the bin says what to do instead of failing on a .ts file Node will not strip there.
    const bare = join(dir, 'bare', 'node_modules', 'mcpgate');
    mkdirSync(bare, { recursive: true });
    copyFileSync(join(REPO, 'package.json'), join(bare, 'package.json'));
    cpSync(join(REPO, 'bin'), join(bare, 'bin'), { recursive: true });
    cpSync(join(REPO, 'src'), join(bare, 'src'), { recursive: true });
    const missing = await run(process.execPath, [join(bare, 'bin', 'mcpgate.js'), '--version'], { cwd: dir });
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, `mcpgate: ${join(bare, 'dist', 'cli.js')} is missing; run "npm run build" first\n`);
  });

  it(`an old Node gets one line naming Node ${REQUIRED}, from the launcher and from dist/cli.js`, async (t) => {
    const systemVersion = await versionOf(SYSTEM_NODE);
    if (systemVersion !== undefined && older(systemVersion, REQUIRED)) {
      for (const entry of [join(REPO, 'bin', 'mcpgate.js'), join(installed, 'bin', 'mcpgate.js'), join(installed, 'dist', 'cli.js')]) {
        const old = await run(SYSTEM_NODE, [entry, 'check', '--config', config], { cwd: dir });
        assert.equal(old.code, 1, entry);
        assert.equal(old.stdout, '', entry);
        assert.equal(old.stderr, oldNodeLine(REQUIRED, systemVersion, SYSTEM_NODE), entry);
      }
    } else {
      t.diagnostic(`${SYSTEM_NODE} is ${systemVersion ?? 'absent'}: no Node older than ${REQUIRED} here, only the simulation below runs`);
    }
    // Always: the same files next to a package.json that asks for more than this Node has.
    const future = join(dir, 'future');
    mkdirSync(future);
    cpSync(join(REPO, 'bin'), join(future, 'bin'), { recursive: true });
    cpSync(join(installed, 'dist'), join(future, 'dist'), { recursive: true });
    symlinkSync(join(REPO, 'node_modules'), join(future, 'node_modules'));
    const wanted = `${Number(process.versions.node.split('.')[0]) + 1}.0`;
    writeFileSync(join(future, 'package.json'), JSON.stringify({ ...PKG, engines: { node: `>=${wanted}` } }));
    for (const entry of [join(future, 'bin', 'mcpgate.js'), join(future, 'dist', 'cli.js')]) {
      const old = await run(process.execPath, [entry, '--version'], { cwd: dir });
      assert.equal(old.code, 1, entry);
      assert.equal(old.stdout, '', entry);
      assert.equal(old.stderr, oldNodeLine(wanted, process.versions.node, process.execPath), entry);
    }
  });
});
