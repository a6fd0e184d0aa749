/**
 * `mcpgate check` says what `mcpgate serve` will say: both run the one validation, so a config
 * that check accepts starts, and one that serve would refuse is refused by check with the same
 * problems. Also: `check --no-secrets` for a deployment's config without its secrets, the
 * environment override blamed by name, `MCPGATE_CONFIG`, and "did you mean" for unknown keys.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../support/gateway.ts';

const LAUNCHER = new URL('../../bin/mcpgate.js', import.meta.url).pathname;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `mcpgate ARGS` as README.md says (`node bin/mcpgate.js` is what `npx mcpgate` runs); `serve` is stopped once it listens. */
function mcpgate(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const child = spawn(process.execPath, [LAUNCHER, ...args], { env: { ...process.env, MCPGATE_CONFIG: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let stopped = false;
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
    // Once: a second SIGTERM (its handler is a once-listener) would kill it without the drain.
    if (!stopped && stdout.includes('"msg":"listening"')) {
      stopped = true;
      child.kill('SIGTERM');
    }
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

/** The `  - path: message` lines of a ConfigError. */
function problems(text: string): string[] {
  return text.split('\n').filter((line) => line.startsWith('  - ')).map((line) => line.slice(4));
}

describe('mcpgate check and serve agree', { concurrency: true }, () => {
  let dir: string;
  const signingPem = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mcpgate-check-'));
    writeFileSync(join(dir, 'signing.pem'), signingPem);
    writeFileSync(join(dir, 'not-a-key.pem'), 'this is a certificate request, not a key\n');
    writeFileSync(join(dir, 'short.pem'), generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  function file(name: string, lines: string[]): string {
    const path = join(dir, name);
    writeFileSync(path, `${lines.join('\n')}\n`);
    return path;
  }

  /** A gateway with login on a free port (serve must be able to start when the config is good). */
  async function loginConfig(name: string, overrides: { signingKey?: string; storage?: string[]; upstreams?: string[]; server?: string[] } = {}): Promise<string> {
    const port = await freePort();
    return file(name, [
      'server:',
      `  listen: "127.0.0.1:${port}"`,
      '  publicUrl: "https://mcp.example.com"',
      ...(overrides.server ?? []),
      'idp:',
      '  issuer: "https://login.example.com"',
      '  clientId: "mcpgate"',
      'authServer:',
      `  signingKeys: ["file:${overrides.signingKey ?? join(dir, 'signing.pem')}"]`,
      ...(overrides.storage ?? []),
      'upstreams:',
      ...(overrides.upstreams ?? ['  - { name: kube, url: "http://kube-mcp:8080/mcp", auth: { mode: idp } }']),
    ]);
  }

  /** check and serve both refuse the file, with exactly the same problems. */
  async function bothRefuse(path: string, env: Record<string, string> = {}): Promise<string[]> {
    const [check, serve] = await Promise.all([mcpgate(['check', '--config', path], env), mcpgate(['serve', '--config', path], env)]);
    assert.equal(check.code, 1, `check: ${check.stdout}${check.stderr}`);
    assert.equal(serve.code, 1, `serve: ${serve.stdout}${serve.stderr}`);
    assert.doesNotMatch(serve.stdout, /"msg":"listening"/);
    assert.deepEqual(problems(serve.stderr), problems(check.stderr), 'serve names the same problems as check');
    assert.ok(problems(check.stderr).length > 0, check.stderr);
    return problems(check.stderr);
  }

  it('a good config: check says ok and serve starts', async () => {
    const path = await loginConfig('good.yaml');
    const check = await mcpgate(['check', '--config', path]);
    assert.equal(check.code, 0, check.stderr);
    const serve = await mcpgate(['serve', '--config', path]);
    assert.match(serve.stdout, /"msg":"listening"/, serve.stderr);
    assert.equal(serve.code, 0, `${serve.stdout}${serve.stderr}`);
  });

  it('a signing-key file that holds no PEM key: both name the config entry and the file', async () => {
    const found = await bothRefuse(await loginConfig('not-pem.yaml', { signingKey: join(dir, 'not-a-key.pem') }));
    assert.deepEqual(found, [`authServer.signingKeys[0]: file:${join(dir, 'not-a-key.pem')}: not a PEM key (no -----BEGIN … KEY----- line)`]);
    const short = await bothRefuse(await loginConfig('short-rsa.yaml', { signingKey: join(dir, 'short.pem') }));
    assert.deepEqual(short, [`authServer.signingKeys[0]: file:${join(dir, 'short.pem')}: RSA keys must have at least 2048 bits`]);
  });

  it('valkey with allowUnencrypted: true is refused by both, and no message recommends the flag', async () => {
    const found = await bothRefuse(
      await loginConfig('unencrypted.yaml', { storage: ['storage:', '  kind: valkey', '  valkey: { url: "redis://127.0.0.1:1/0" }', '  allowUnencrypted: true'] }),
    );
    assert.ok(found.some((p) => p.startsWith('storage.allowUnencrypted: is not supported')), found.join('\n'));
    assert.ok(found.some((p) => p.startsWith('storage.encryptionKeys: is required with valkey')), found.join('\n'));
    for (const p of found) assert.doesNotMatch(p, /set allowUnencrypted/);
  });

  it('a token_exchange endpoint on http, or on a private address, outside devMode: refused by check, not first at request time', async () => {
    const exchange = (url: string) => [
      `  - { name: x, url: "http://x-mcp:8080/mcp", auth: { mode: token_exchange, tokenEndpoint: "${url}", audience: "x", clientId: "mcpgate" } }`,
    ];
    const http = await bothRefuse(await loginConfig('te-http.yaml', { upstreams: exchange('http://10.0.0.5/token') }));
    assert.deepEqual(http, ['upstreams[0].auth.tokenEndpoint: must be an https URL (http is allowed only with devMode: true)']);
    const privateHost = await bothRefuse(await loginConfig('te-private.yaml', { upstreams: exchange('https://10.0.0.5/token') }));
    assert.equal(privateHost.length, 1);
    assert.match(privateHost[0]!, /^upstreams\[0\]\.auth\.tokenEndpoint: 10\.0\.0\.5 is a loopback, private, link-local or reserved address/);
    const ok = await mcpgate(['check', '--config', await loginConfig('te-public.yaml', { upstreams: exchange('https://sts.example.com/token') })]);
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('server.allowHosts lets a token_exchange endpoint on a private address pass, as the fetcher lets it through; an unlisted one is still refused', async () => {
    const exchange = (url: string) => [
      `  - { name: x, url: "http://x-mcp:8080/mcp", auth: { mode: token_exchange, tokenEndpoint: "${url}", audience: "x", clientId: "mcpgate" } }`,
    ];
    const server = ['  allowHosts: ["10.0.0.7", "[FD00::1]"]'];
    for (const [name, url] of [['listed-v4', 'https://10.0.0.7/token'], ['listed-v6', 'https://[fd00::1]:8443/token']] as const) {
      const check = await mcpgate(['check', '--config', await loginConfig(`te-${name}.yaml`, { server, upstreams: exchange(url) })]);
      assert.equal(check.code, 0, `${url}: ${check.stderr}`);
    }
    const unlisted = await bothRefuse(await loginConfig('te-unlisted.yaml', { server, upstreams: exchange('https://10.0.0.5/token') }));
    assert.equal(unlisted.length, 1);
    assert.match(unlisted[0]!, /^upstreams\[0\]\.auth\.tokenEndpoint: 10\.0\.0\.5 is a loopback, private, link-local or reserved address: .* unless server\.allowHosts lists it$/);
    // The list opens internal addresses only: a reserved one is refused even when listed.
    const reserved = await bothRefuse(await loginConfig('te-reserved.yaml', { server: ['  allowHosts: ["192.0.2.1"]'], upstreams: exchange('https://192.0.2.1/token') }));
    assert.deepEqual(reserved, ['upstreams[0].auth.tokenEndpoint: 192.0.2.1 is an unspecified, multicast or reserved address: the gateway never sends tokens there, even on server.allowHosts']);
  });

  it('--no-secrets checks a deployment config without its secrets, and still finds every other problem', async () => {
    const lines = [
      'server:',
      '  publicUrl: "https://mcp.example.com"',
      'idp: { issuer: "https://login.example.com", clientId: "mcpgate", clientSecret: "env:NOT_SET_ANYWHERE_123" }',
      'authServer: { signingKeys: ["file:/nonexistent/keys/signing.pem"] }',
      'storage:',
      '  kind: valkey',
      '  valkey: { url: "redis://valkey:6379/0", password: "env:NOT_SET_EITHER_456" }',
      '  encryptionKeys: [{ id: "k1", key: "env:NOT_SET_STORE_KEY_789" }]',
      'upstreams:',
      '  - { name: kube, url: "http://kube-mcp:8080/mcp", auth: { mode: idp } }',
    ];
    const path = file('deployment.yaml', lines);
    const full = await mcpgate(['check', '--config', path]);
    assert.equal(full.code, 1, 'without the secrets the full check fails');
    assert.match(full.stderr, /NOT_SET_ANYWHERE_123 is not set/);
    assert.match(full.stderr, /cannot read \/nonexistent\/keys\/signing\.pem/);

    const shape = await mcpgate(['check', '--no-secrets', '--config', path]);
    assert.equal(shape.code, 0, shape.stderr);
    assert.equal(shape.stdout, `${path}: ok (1 upstream; secrets not read: only the form of their references was checked)\n`);

    // The form of references and the cross-field rules are still checked.
    const bad = file('deployment-bad.yaml', [
      ...lines.slice(0, 6),
      '  valkey: { url: "redis://valkey:6379/0", password: "hunter2" }',
      'upstreams:',
      '  - { name: kube, url: "http://kube-mcp:8080/mcp", auth: { mode: idp } }',
    ]);
    const refused = await mcpgate(['check', '--no-secrets', '--config', bad]);
    assert.equal(refused.code, 1);
    assert.deepEqual(problems(refused.stderr), [
      'storage.valkey.password: must be a secret reference (env:NAME or file:/path), never an inline value',
      'storage.encryptionKeys: is required with valkey (tokens are sealed at rest; `mcpgate keys generate` prints a key)',
    ]);
    assert.ok(!refused.stderr.includes('hunter2'));
  });

  it('an environment override is blamed on its variable, not on the file', async () => {
    const path = file('plain.yaml', ['server:', '  publicUrl: "https://mcp.example.com"', 'upstreams:', '  - { name: kube, url: "http://kube-mcp:8080/mcp" }']);
    const run = await mcpgate(['check', '--config', path], { MCPGATE_LOG_LEVEL: 'verbose' });
    assert.equal(run.code, 1);
    const found = problems(run.stderr);
    assert.equal(found.length, 1);
    assert.match(found[0]!, /^server\.logLevel \(from the environment variable MCPGATE_LOG_LEVEL, not the file\): /);
    const url = await mcpgate(['check', '--config', path], { MCPGATE_PUBLIC_URL: 'http://mcp.example.com' });
    assert.match(problems(url.stderr)[0]!, /^server\.publicUrl \(from the environment variable MCPGATE_PUBLIC_URL, not the file\): must be an https URL/);
  });

  it('MCPGATE_CONFIG names the file when --config is left out', async () => {
    const path = file('by-env.yaml', ['server:', '  publicUrl: "https://mcp.example.com"', 'upstreams:', '  - { name: kube, url: "http://kube-mcp:8080/mcp" }']);
    const run = await mcpgate(['check'], { MCPGATE_CONFIG: path });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `${path}: ok (1 upstream)\n`);
    const help = await mcpgate(['--help']);
    assert.match(help.stdout, /MCPGATE_CONFIG/);
  });

  it('an unknown key gets the closest known key of its section as a suggestion', async () => {
    const path = file('typos.yaml', [
      'server:',
      '  publicURL: "https://mcp.example.com"',
      '  publicUrl: "https://mcp.example.com"',
      '  maxBodyByte: 1000',
      '  frobnicate: true',
      'idp: { issuer: "https://login.example.com", clientId: "mcpgate", clientSecert: "env:X" }',
      'authServer: { signingKey: ["file:/k.pem"] }',
      'upstream:',
      '  - { name: kube, url: "http://kube-mcp:8080/mcp" }',
      'upstreams:',
      '  - { name: kube, url: "http://kube-mcp:8080/mcp", auth: { mode: static, vaule: "env:T" } }',
      '  - { name: ex, url: "http://x:8080/mcp", auth: { mode: token_exchange, tokenEndpont: "https://sts.example.com/t", audience: a, clientId: c } }',
    ]);
    const run = await mcpgate(['check', '--no-secrets', '--config', path]);
    assert.equal(run.code, 1);
    const found = problems(run.stderr);
    for (const expected of [
      // publicUrl is present already: suggesting it again would be wrong.
      'server: unknown key "publicURL"',
      'server: unknown key "maxBodyByte" (did you mean "maxBodyBytes"?)',
      'server: unknown key "frobnicate"',
      'idp: unknown key "clientSecert" (did you mean "clientSecret"?)',
      'authServer: unknown key "signingKey" (did you mean "signingKeys"?)',
      '(root): unknown key "upstream"',
      'upstreams[0].auth: unknown key "vaule" (did you mean "value"?)',
      'upstreams[1].auth: unknown key "tokenEndpont" (did you mean "tokenEndpoint"?)',
    ]) {
      assert.ok(found.includes(expected), `${expected}\nin:\n${found.join('\n')}`);
    }
  });
});
