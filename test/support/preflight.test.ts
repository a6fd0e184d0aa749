/**
 * `npm test`'s preflight (`test/support/preflight.ts`, the `pretest` script), run as npm runs it:
 * a child `node` process, here with a PATH that holds nothing but `node` (a fresh machine), and
 * its decisions read from its exit code and what it printed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CHROMIUM_PATH as BROWSER_TESTS_CHROMIUM } from './browser-agent.ts';
import { CHROMIUM_PATH } from './preflight.ts';

const SCRIPT = join(import.meta.dirname, 'preflight.ts');
const asRoot = process.getuid?.() === 0;
const sudo = asRoot ? '' : 'sudo ';
const chromiumHere = existsSync(CHROMIUM_PATH);

let bin: string;

before(async () => {
  bin = await mkdtemp(join(tmpdir(), 'mcpgate-preflight-'));
  await symlink(process.execPath, join(bin, 'node'));
});
after(() => rm(bin, { recursive: true, force: true }));

/** Runs the preflight as `npm test` would, with PATH = `bin` only. */
function run(env: Record<string, string> = {}) {
  const result = spawnSync(join(bin, 'node'), [SCRIPT], { env: { PATH: bin, ...env }, encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, lines: result.stderr.split('\n').filter(Boolean), stdout: result.stdout };
}

async function executable(name: string, body = 'exit 0'): Promise<void> {
  await writeFile(join(bin, name), `#!/bin/sh\n${body}\n`);
  await chmod(join(bin, name), 0o755);
}

describe('npm test preflight', () => {
  test('looks for Chromium where the browser tests launch it', () => {
    assert.equal(CHROMIUM_PATH, BROWSER_TESTS_CHROMIUM);
  });

  test('on a machine without the tools, it stops at once with one exact command per missing tool, and exit code 1', () => {
    const { status, lines } = run({ MCPGATE_PREFLIGHT_NO_INSTALL: '1' });
    assert.equal(status, 1);
    const expected = [
      ...(chromiumHere ? [] : [`npm test needs chromium at /usr/bin/chromium for the browser tests; install it with: ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends chromium`]),
      `npm test needs redis-server on PATH for the Valkey storage tests; install it with: ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends redis-server`,
      `npm test needs kubectl on PATH for the deploy manifest tests; install it with: ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends kubernetes-client`,
    ];
    for (const line of expected) assert.ok(lines.includes(line), `missing line:\n${line}\nin:\n${lines.join('\n')}`);
    const packages = [...(chromiumHere ? [] : ['chromium']), 'redis-server', 'kubernetes-client'].join(' ');
    assert.equal(lines.at(-1), `all at once: ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${packages}`);
  });

  test('REDIS_SERVER names the binary looked for, as for the tests', () => {
    const { status, lines } = run({ MCPGATE_PREFLIGHT_NO_INSTALL: '1', REDIS_SERVER: '/opt/valkey/bin/valkey-server' });
    assert.equal(status, 1);
    assert.ok(lines.some((l) => l.startsWith('npm test needs redis-server at /opt/valkey/bin/valkey-server for the Valkey storage tests')), lines.join('\n'));
  });

  test(asRoot ? 'as root with apt-get: installs the missing packages, then checks again' : 'not root: never runs apt-get, says what to run with sudo', async () => {
    // An apt-get that records its arguments and "installs" by dropping the programs into PATH.
    const log = join(bin, 'apt.log');
    await executable(
      'apt-get',
      [
        `echo "$DEBIAN_FRONTEND $*" >> ${log}`,
        'case "$*" in',
        `  *install*redis-server*) printf '#!/bin/sh\\nexit 0\\n' > ${join(bin, 'redis-server')}; /bin/chmod 755 ${join(bin, 'redis-server')};;`,
        'esac',
        'case "$*" in',
        `  *install*kubernetes-client*) printf '#!/bin/sh\\nexit 0\\n' > ${join(bin, 'kubectl')}; /bin/chmod 755 ${join(bin, 'kubectl')};;`,
        'esac',
      ].join('\n'),
    );
    try {
      const { status, lines } = run();
      if (asRoot) {
        const calls = (await readFile(log, 'utf8')).trim().split('\n');
        const packages = [...(chromiumHere ? [] : ['chromium']), 'redis-server', 'kubernetes-client'].join(' ');
        assert.deepEqual(calls, ['noninteractive update -qq', `noninteractive install -y -qq --no-install-recommends ${packages}`]);
        assert.equal(lines[0], `npm test: installing ${packages.split(' ').join(', ')} (missing: ${[...(chromiumHere ? [] : ['chromium']), 'redis-server', 'kubectl'].join(', ')})`);
        // The fake cannot install Chromium: without it here, the preflight still says so and fails.
        assert.equal(status, chromiumHere ? 0 : 1, lines.join('\n'));
      } else {
        assert.equal(existsSync(log), false, 'apt-get was not run');
        assert.equal(status, 1);
        assert.ok(lines.some((l) => l.includes('sudo apt-get install -y --no-install-recommends redis-server')), lines.join('\n'));
      }
    } finally {
      for (const name of ['apt-get', 'apt.log', 'redis-server', 'kubectl']) await rm(join(bin, name), { force: true });
    }
  });

  test('with everything there it prints nothing and lets the tests run (exit 0)', async () => {
    await executable('redis-server');
    await executable('kubectl');
    try {
      const { status, lines, stdout } = run({ MCPGATE_PREFLIGHT_NO_INSTALL: '1' });
      if (chromiumHere) {
        assert.equal(status, 0, lines.join('\n'));
        assert.deepEqual(lines, []);
      } else {
        // Without Chromium on this machine, only Chromium is named.
        assert.equal(status, 1);
        assert.deepEqual(lines.filter((l) => l.startsWith('npm test needs ')).map((l) => l.split(' ')[3]), ['chromium']);
      }
      assert.equal(stdout, '');
    } finally {
      await rm(join(bin, 'redis-server'), { force: true });
      await rm(join(bin, 'kubectl'), { force: true });
    }
  });
});
