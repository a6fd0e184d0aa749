/** `mcpgate keys generate` prints key material the gateway accepts. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { loadSigningKeys } from '../../src/authserver/tokens/keys.ts';
import { createSealer } from '../../src/store/sealed.ts';

const run = promisify(execFile);
const cli = new URL('../../src/cli.ts', import.meta.url).pathname;

test('keys generate: a PKCS#8 signing key per algorithm and a 32-byte store key that seal and sign', async () => {
  for (const alg of ['ES256', 'RS256', 'EdDSA']) {
    const { stdout } = await run(process.execPath, [cli, 'keys', 'generate', '--alg', alg]);
    const pem = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----\n/.exec(stdout)?.[0];
    assert.ok(pem, 'a PKCS#8 PEM block');
    assert.equal(loadSigningKeys({ pems: [pem], devMode: false, warn: () => undefined }).signing.alg, alg);
    const storeKey = stdout.trim().split('\n').at(-1)!;
    assert.equal(Buffer.from(storeKey, 'base64').length, 32);
    const sealer = createSealer({ keys: [{ id: 'k1', key: Buffer.from(storeKey, 'base64') }] });
    assert.equal(sealer.open('n', sealer.seal('n', 'x')), 'x');
    assert.match(stdout, /authServer\.signingKeys/);
    assert.match(stdout, /storage\.encryptionKeys/);
  }
});

test('keys with a wrong subcommand or algorithm exits 2', async () => {
  for (const args of [['keys'], ['keys', 'generate', '--alg', 'HS256']]) {
    await assert.rejects(run(process.execPath, [cli, ...args]), (error: { code?: number }) => error.code === 2);
  }
});
