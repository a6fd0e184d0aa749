/**
 * The upstream token row's compare-and-set bookkeeping: a refresh replaces or drops the row only
 * while it still holds what the refresh started from, so a loser of a race never deletes or
 * overwrites the winner's fresh tokens.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createSealer } from '../../src/store/sealed.ts';
import type { UpstreamToken } from '../../src/upstream-oauth/records.ts';
import { createUpstreamStores } from '../../src/upstream-oauth/stores.ts';

const token = (generation: number): UpstreamToken => ({
  upstream: 'notes',
  resource: 'https://notes.example/mcp',
  server: { issuer: 'https://as.example', authorizationEndpoint: 'https://as.example/auth', tokenEndpoint: 'https://as.example/token', issParameterSupported: true },
  client: { clientId: 'c', authMethod: 'none', source: 'dcr' },
  scopes: ['notes:read'],
  accessToken: `at-${generation}`,
  refreshToken: `rt-${generation}`,
  obtainedAt: generation,
});

function fixture() {
  const store = createMemoryStore();
  return createUpstreamStores({ store, sealer: createSealer({ keys: [{ id: 'k', key: new Uint8Array(32).fill(3) }] }) });
}

test('replace swaps the row only while it is still the version read', async () => {
  const { tokens } = fixture();
  await tokens.put('sid', token(1));
  const read = (await tokens.read('sid', 'notes'))!;
  assert.equal(read.token.refreshToken, 'rt-1');
  assert.equal(await tokens.replace('sid', token(2), read.version), true);
  // A second refresh that started from generation 1 must not overwrite generation 2.
  assert.equal(await tokens.replace('sid', token(3), read.version), false);
  assert.equal((await tokens.get('sid', 'notes'))?.refreshToken, 'rt-2');
  assert.deepEqual(await tokens.list('sid'), ['notes']);
});

test("takeIf drops the row only while it is still the version read, so a loser never deletes the winner's row", async () => {
  const { tokens } = fixture();
  await tokens.put('sid', token(1));
  const stale = (await tokens.read('sid', 'notes'))!;
  await tokens.put('sid', token(2));
  assert.equal(await tokens.takeIf('sid', 'notes', stale.version), false);
  assert.equal((await tokens.get('sid', 'notes'))?.refreshToken, 'rt-2');
  assert.deepEqual(await tokens.list('sid'), ['notes']);
  const current = (await tokens.read('sid', 'notes'))!;
  assert.equal(await tokens.takeIf('sid', 'notes', current.version), true);
  assert.equal(await tokens.get('sid', 'notes'), undefined);
  assert.deepEqual(await tokens.list('sid'), []);
});
