/**
 * `mcpgate serve` validates its config in a child process (src/config/load-apart.ts) so the YAML
 * parser and the schema library never load into the serving gateway. What the gateway receives
 * must be exactly what validating in its own process gives: the same config (secrets read, env
 * overrides applied, durations in ms), or the same problems.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateSigningKeyPem, generateStoreKey } from '../../src/authserver/tokens/keys.ts';
import { ConfigError, loadConfigFile } from '../../src/config/load.ts';
import { loadConfigApart } from '../../src/config/load-apart.ts';

const examples = fileURLToPath(new URL('../../deploy/examples/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'mcpgate-load-apart-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** `loadConfigFile` in this process with the environment `env` (what serve did before). */
function inProcess(path: string, env: Record<string, string>, resolveSecrets = true) {
  return loadConfigFile(path, { env, readFile: (file) => readFileSync(file, 'utf8') }, { resolveSecrets });
}

describe('config validated in a child process', () => {
  it('gives the config in-process validation gives: secrets read from files and the environment, overrides applied', async () => {
    writeFileSync(join(dir, 'signing.pem'), generateSigningKeyPem('ES256'), { mode: 0o600 });
    writeFileSync(join(dir, 'store.key'), `${generateStoreKey()}\n`, { mode: 0o600 });
    const path = join(dir, 'full.yaml');
    writeFileSync(
      path,
      [
        'server:',
        '  publicUrl: "https://mcp.example.com"',
        '  drainTimeout: 40s',
        'upstreams:',
        '  - name: files',
        '    url: "https://files.internal/mcp"',
        '    auth: { mode: idp }',
        '  - name: kube',
        '    url: "https://kube.internal/mcp"',
        '    auth: { mode: static, header: "X-Api-Key", value: "env:KUBE_KEY" }',
        'idp:',
        '  issuer: "https://login.example.com"',
        '  clientId: mcpgate',
        '  clientSecret: "env:IDP_SECRET"',
        'authServer:',
        `  signingKeys: ["file:${dir}/signing.pem"]`,
        '  accessTokenTtl: 15m',
        'storage:',
        `  encryptionKeys: [{ id: k1, key: "file:${dir}/store.key" }]`,
      ].join('\n'),
    );
    const env = { KUBE_KEY: 'kube-key-value', IDP_SECRET: 'idp-secret-value', MCPGATE_LISTEN: '127.0.0.1:9911' };
    const apart = await loadConfigApart(path, {}, env);
    assert.deepStrictEqual(apart, inProcess(path, env));
    assert.equal(apart.server.listen, '127.0.0.1:9911', 'the environment override reached the child');
    assert.equal(apart.server.drainTimeout, 40_000);
    assert.equal(apart.idp?.clientSecret, 'idp-secret-value');
    assert.match(apart.authServer.signingKeys[0]!, /BEGIN PRIVATE KEY/);
  });

  it('gives the same config for every example deploy/ ships (secrets left as references)', async () => {
    const files = readdirSync(examples).filter((name) => name.endsWith('.yaml'));
    assert.ok(files.length >= 5, `examples found: ${files.join(', ')}`);
    for (const name of files) {
      const path = join(examples, name);
      assert.deepStrictEqual(await loadConfigApart(path, { resolveSecrets: false }, {}), inProcess(path, {}, false), name);
    }
  });

  it('rejects an invalid config with the problems in-process validation lists', async () => {
    const path = join(dir, 'bad.yaml');
    writeFileSync(path, 'server:\n  publicUrl: "ftp://x"\n  lisen: "0.0.0.0:1"\nupstreams:\n  - { name: "Bad Name", url: "http://a/mcp" }\n');
    const expected = (() => {
      try {
        inProcess(path, {});
      } catch (error) {
        return error as ConfigError;
      }
      assert.fail('the config is valid in process');
    })();
    const error = await loadConfigApart(path, {}, {}).then(
      () => assert.fail('accepted'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof ConfigError, String(error));
    assert.ok(expected.problems.length >= 3, expected.problems.join('\n'));
    assert.deepEqual(error.problems, expected.problems);
    assert.equal(error.message, expected.message);
  });

  it('names an unreadable file and a missing secret as in process, without the secret', async () => {
    const missing = await loadConfigApart(join(dir, 'no-such.yaml'), {}, {}).catch((e: unknown) => e);
    assert.ok(missing instanceof ConfigError);
    assert.deepEqual(missing.problems, ['(file): cannot read (ENOENT)']);
    const path = join(dir, 'secret.yaml');
    writeFileSync(path, 'server:\n  publicUrl: "https://mcp.example.com"\nupstreams:\n  - name: kube\n    url: "https://kube.internal/mcp"\n    auth: { mode: static, header: "X-Api-Key", value: "env:KUBE_KEY" }\n');
    const unset = await loadConfigApart(path, {}, {}).catch((e: unknown) => e);
    assert.ok(unset instanceof ConfigError);
    assert.match(unset.problems.join('\n'), /KUBE_KEY is not set/);
  });
});
