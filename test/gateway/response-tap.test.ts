import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRpcResponseTap } from '../../src/gateway/response-tap.ts';

/** Feeds `parts` through a tap as one answer and returns the messages it delivered. */
function tapped(contentType: string, parts: string[], mentions?: string[]): unknown[] {
  const seen: unknown[] = [];
  const tap = createRpcResponseTap({ maxBytes: 1024, onMessage: (m) => seen.push(m), ...(mentions ? { mentions } : {}) });
  tap.head(200, { 'content-type': contentType });
  for (const part of parts) tap.data(Buffer.from(part));
  tap.end();
  return seen;
}

test('a JSON answer split over chunks is delivered whole; an SSE answer event by event', () => {
  assert.deepEqual(tapped('application/json', ['{"jsonrpc":"2.0","id":1,', '"result":{"isError":true}}']), [{ jsonrpc: '2.0', id: 1, result: { isError: true } }]);
  assert.deepEqual(tapped('text/event-stream', ['data: {"id":1}\n\n', 'data: {"id":2}\n\n']), [{ id: 1 }, { id: 2 }]);
});

test('with mentions, only messages that name one are parsed and delivered, however their keys are spelled', () => {
  const mentions = ['"error"', '"isError"'];
  assert.deepEqual(tapped('application/json', ['{"jsonrpc":"2.0","id":1,"result":{"content":[]}}'], mentions), [], 'no error key: not delivered');
  assert.equal(tapped('application/json', ['{"jsonrpc":"2.0","id":1,"result":{"isError":true}}'], mentions).length, 1);
  assert.equal(tapped('application/json', ['{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}'], mentions).length, 1);
  // A key spelled with an escape is the same key to JSON.parse: such a message is parsed too.
  assert.deepEqual(tapped('application/json', ['{"jsonrpc":"2.0","id":1,"result":{"is\\u0045rror":true}}'], mentions), [{ jsonrpc: '2.0', id: 1, result: { isError: true } }]);
  assert.equal(tapped('text/event-stream', ['data: {"id":1,"result":{}}\n\n', 'data: {"id":2,"error":{}}\n\n'], mentions).length, 1);
});

test('a non-2xx answer, an unknown type and unparsable text deliver nothing and never throw', () => {
  const seen: unknown[] = [];
  const tap = createRpcResponseTap({ maxBytes: 1024, onMessage: (m) => seen.push(m) });
  tap.head(500, { 'content-type': 'application/json' });
  tap.data(Buffer.from('{"id":1}'));
  tap.end();
  assert.deepEqual(tapped('text/plain', ['{"id":1}']), []);
  assert.deepEqual(tapped('application/json', ['{not json']), []);
  assert.deepEqual(seen, []);
});
