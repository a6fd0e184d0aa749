/**
 * What an operator sees when the store is not usable: `mcpgate serve` on Valkey answers /readyz
 * 503 naming the failed check and a short reason (`WRONGPASS`, `ECONNREFUSED`) that used to be
 * only in the log, and never the password or the server's full reply.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../support/gateway.ts';
import { waitFor } from '../support/mcp-upstream.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';

const LAUNCHER = new URL('../../bin/mcpgate.js', import.meta.url).pathname;
const PASSWORD = 'the-right-password';
const WRONG = 'a-wrong-password-1234';

describe('/readyz says why the store is not ready', { concurrency: true }, () => {
  let dir: string;
  let redis: RedisServer;
  const children: ChildProcess[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mcpgate-readyz-'));
    // An ACL user with a password (the default user stays open, so the helper's PING still works).
    redis = await startRedis({ args: ['--user', 'mcpgate', 'on', `>${PASSWORD}`, '~*', '&*', '+@all'] });
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Starts `mcpgate serve` on a Valkey URL with the given password; resolves with its base URL once it listens. */
  async function serve(name: string, valkeyUrl: string, password: string): Promise<{ base: string; logs: () => string }> {
    const port = await freePort();
    const path = join(dir, `${name}.yaml`);
    writeFileSync(
      path,
      [
        'server:',
        `  listen: "127.0.0.1:${port}"`,
        `  publicUrl: "http://127.0.0.1:${port}"`,
        '  devMode: true',
        'storage:',
        '  kind: valkey',
        `  valkey: { url: "${valkeyUrl}", username: "env:VALKEY_USER", password: "env:VALKEY_PASSWORD" }`,
        '  encryptionKeys: [{ id: "k1", key: "env:MCPGATE_STORE_KEY" }]',
        'upstreams:',
        '  - { name: up, url: "http://127.0.0.1:9/mcp" }',
        '',
      ].join('\n'),
    );
    const child = spawn(process.execPath, [LAUNCHER, 'serve', '--config', path], {
      env: { ...process.env, VALKEY_USER: 'mcpgate', VALKEY_PASSWORD: password, MCPGATE_STORE_KEY: randomBytes(32).toString('base64') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let logs = '';
    child.stdout!.on('data', (chunk: Buffer) => (logs += chunk.toString('utf8')));
    child.stderr!.on('data', (chunk: Buffer) => (logs += chunk.toString('utf8')));
    await waitFor(() => logs.includes('"msg":"listening"'), `the gateway to listen; output:\n${logs}`, 45_000);
    return { base: `http://127.0.0.1:${port}`, logs: () => logs };
  }

  /** Polls /readyz until it fails with a reason (the first connection attempt may still be under way). */
  async function notReady(base: string): Promise<{ status: string; failed: string[]; reasons: Record<string, string> }> {
    let last = '';
    for (let i = 0; i < 50; i++) {
      const res = await fetch(`${base}/readyz`);
      last = await res.text();
      if (res.status === 503) {
        const body = JSON.parse(last) as { status: string; failed: string[]; reasons: Record<string, string> };
        if (body.reasons.store !== 'timeout') return Object.assign(body, { raw: last });
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.fail(`/readyz never failed with a reason; last answer: ${last}`);
  }

  it('a wrong Valkey password: failed ["store"], reason WRONGPASS, and no password in the answer', async () => {
    const { base, logs } = await serve('wrongpass', redis.url, WRONG);
    const body = await notReady(base);
    assert.equal(body.status, 'not_ready');
    // The event bus cannot subscribe either (its own connection to the same Valkey).
    assert.deepEqual(body.failed, ['events', 'store']);
    assert.deepEqual(body.reasons, { events: 'NOT_SUBSCRIBED', store: 'WRONGPASS' });
    assert.ok(!JSON.stringify(body).includes(WRONG));
    assert.match(logs(), /WRONGPASS/, 'the log has the same reason');
  });

  it('nothing listening at the Valkey URL: reason ECONNREFUSED', async () => {
    const closedPort = await freePort();
    const { base } = await serve('refused', `redis://127.0.0.1:${closedPort}/0`, PASSWORD);
    const body = await notReady(base);
    assert.deepEqual(body.failed, ['events', 'store']);
    assert.deepEqual(body.reasons, { events: 'NOT_SUBSCRIBED', store: 'ECONNREFUSED' });
  });

  it('the right password: ready', async () => {
    const { base } = await serve('ok', redis.url, PASSWORD);
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      status = (await fetch(`${base}/readyz`)).status;
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(status, 200);
  });
});
