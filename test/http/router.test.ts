import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRouter, type Route } from '../../src/http/router.ts';

const noop = () => undefined;
const routes: Route[] = [
  { method: 'GET', path: '/healthz', handler: noop },
  { method: ['POST', 'GET', 'DELETE'], path: '/:upstream/mcp', handler: noop, errorStyle: 'jsonrpc', name: 'mcp' },
  { method: 'OPTIONS', path: '/:upstream/mcp', handler: noop, errorStyle: 'jsonrpc', name: 'mcp-preflight' },
  { method: 'GET', path: '/connect/:name', handler: noop, name: 'connect' },
];

test('exact and parameterised paths, decoded parameters, 405 with the allowed methods, 404', () => {
  const router = createRouter(routes);
  const found = router.match('POST', '/notes/mcp');
  assert.equal(found.kind, 'found');
  assert.deepEqual(found.kind === 'found' && found.params, { upstream: 'notes' });
  assert.deepEqual((router.match('GET', '/connect/a%20b') as { params: unknown }).params, { name: 'a b' });
  assert.equal((router.match('OPTIONS', '/notes/mcp') as { route: Route }).route.name, 'mcp-preflight');
  assert.equal(router.match('GET', '/healthz').kind, 'found');
  assert.deepEqual(router.match('PUT', '/notes/mcp'), { kind: 'method_not_allowed', allow: ['POST', 'GET', 'DELETE', 'OPTIONS'], errorStyle: 'jsonrpc' });
  assert.deepEqual(router.match('GET', '/nothing/here'), { kind: 'not_found' });
  assert.deepEqual(router.match('GET', '/connect/%E0%A4%A'), { kind: 'not_found' }, 'a malformed escape matches nothing');
  assert.deepEqual(router.match('GET', '//mcp'), { kind: 'not_found' }, 'an empty parameter matches nothing');
});

test('a remembered path answers the same as the first time, for each method, and its parameters cannot be changed', () => {
  const router = createRouter(routes);
  for (let i = 0; i < 3; i++) {
    const post = router.match('POST', '/notes/mcp');
    const options = router.match('OPTIONS', '/notes/mcp');
    assert.equal(post.kind === 'found' && post.route.name, 'mcp');
    assert.equal(options.kind === 'found' && options.route.name, 'mcp-preflight');
    assert.equal(router.match('PATCH', '/notes/mcp').kind, 'method_not_allowed');
    assert.ok(post.kind === 'found' && Object.isFrozen(post.params));
  }
});

test('past the memo size every path still matches as it should', () => {
  const router = createRouter(routes);
  for (let i = 0; i < 3000; i++) {
    const match = router.match('POST', `/u${i}/mcp`);
    assert.deepEqual(match.kind === 'found' && match.params, { upstream: `u${i}` });
  }
  assert.deepEqual((router.match('POST', '/u5/mcp') as { params: unknown }).params, { upstream: 'u5' });
});
