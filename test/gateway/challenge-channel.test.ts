/** Channel choice and the per-session capability records: pure functions, a memory store on a fake clock. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { authRequiredReply, chooseChannel, type ChallengeSetting } from '../../src/gateway/challenge.ts';
import { createClientCapabilities, declaresUrlElicitation, protocolAtLeast } from '../../src/gateway/client-capabilities.ts';
import type { RpcInfo } from '../../src/gateway/jsonrpc.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/port.ts';

const rpc = (method: string, id: string | number | null = 1): RpcInfo => ({ id: id ?? undefined, method, batch: false, capabilities: undefined, toolName: undefined });
const elicitSession = { elicitationUrl: true, protocolVersion: '2025-11-25' };
const plainSession = { elicitationUrl: false };

describe('chooseChannel', () => {
  const cases: [string, ChallengeSetting, string, RpcInfo | undefined, string | undefined, typeof elicitSession | typeof plainSession | undefined, string][] = [
    ['auto, elicitation-capable, tools/call', 'auto', 'POST', rpc('tools/call'), 's', elicitSession, 'elicitation'],
    ['auto, elicitation-capable, resources/read', 'auto', 'POST', rpc('resources/read'), 's', elicitSession, 'elicitation'],
    ['auto, plain client, tools/call', 'auto', 'POST', rpc('tools/call'), 's', plainSession, 'tool_result'],
    ['auto, plain client, prompts/list', 'auto', 'POST', rpc('prompts/list'), 's', plainSession, 'jsonrpc_error'],
    ['auto, initialize (no session)', 'auto', 'POST', rpc('initialize'), undefined, undefined, 'reauthorize'],
    ['auto, unknown session (other replica), tools/list', 'auto', 'POST', rpc('tools/list'), 's', undefined, 'jsonrpc_error'],
    ['auto, stateless upstream (no Mcp-Session-Id), resources/list', 'auto', 'POST', rpc('resources/list'), undefined, plainSession, 'jsonrpc_error'],
    ['auto, stateless upstream, elicitation client known by sid', 'auto', 'POST', rpc('tools/call'), undefined, elicitSession, 'elicitation'],
    ['auto, re-initialize of a known elicitation client', 'auto', 'POST', rpc('initialize'), undefined, elicitSession, 'reauthorize'],
    ['auto, notification', 'auto', 'POST', rpc('notifications/initialized', null), 's', plainSession, 'reauthorize'],
    ['auto, GET in a session', 'auto', 'GET', undefined, 's', plainSession, 'held_stream'],
    ['auto, GET without session', 'auto', 'GET', undefined, undefined, undefined, 'reauthorize'],
    ['auto, DELETE', 'auto', 'DELETE', undefined, 's', plainSession, 'reauthorize'],
    ['elicitation forced, plain client', 'elicitation', 'POST', rpc('tools/call'), 's', plainSession, 'elicitation'],
    ['tool_result forced, elicitation client', 'tool_result', 'POST', rpc('tools/call'), 's', elicitSession, 'tool_result'],
    ['tool_result forced, not a tool call', 'tool_result', 'POST', rpc('resources/list'), 's', elicitSession, 'jsonrpc_error'],
    ['reauthorize forced', 'reauthorize', 'POST', rpc('tools/call'), 's', elicitSession, 'reauthorize'],
    ['reauthorize forced, GET', 'reauthorize', 'GET', undefined, 's', elicitSession, 'reauthorize'],
  ];
  for (const [name, setting, method, info, mcpSessionId, session, expected] of cases) {
    test(name, () => assert.equal(chooseChannel({ setting, method, rpc: info, mcpSessionId, session }), expected));
  }
});

describe('authRequiredReply', () => {
  const authRequired = { upstream: 'gh', authUrl: 'https://gw.example.com/oauth/upstream/start?f=1', flowId: '1', elicitationId: 'e1', message: 'Authorize access to gh, then retry.', connectScope: 'mcpgate:connect:gh' };
  const upstream = { name: 'gh', resource: 'https://gw.example.com/base/gh/mcp' };

  test('the re-challenge keeps granted scopes once and points at the RFC 9728 path-inserted metadata', () => {
    const reply = authRequiredReply({
      channel: 'reauthorize',
      upstream,
      rpcId: undefined,
      principal: { subject: 'a', sessionId: 's', clientId: 'c', scopes: ['openid', 'mcpgate:connect:gh', 'mcp'], expiresAt: 0 },
      authRequired,
    });
    assert.equal(reply.status, 403);
    assert.equal(
      reply.headers['www-authenticate'],
      'Bearer resource_metadata="https://gw.example.com/.well-known/oauth-protected-resource/base/gh/mcp", scope="openid mcpgate:connect:gh mcp", error="insufficient_scope", error_description="authorization for gh is required"',
    );
    assert.equal(JSON.parse(reply.body).id, null);
  });

  test('JSON-RPC channels answer 200 application/json with the id', () => {
    for (const channel of ['elicitation', 'tool_result', 'jsonrpc_error'] as const) {
      const reply = authRequiredReply({ channel, upstream, rpcId: 'abc', principal: undefined, authRequired });
      assert.equal(reply.status, 200);
      assert.equal(reply.headers['content-type'], 'application/json');
      assert.equal(JSON.parse(reply.body).id, 'abc');
    }
  });
});

describe('client capabilities memory', () => {
  test('URL elicitation only when elicitation.url is an object', () => {
    assert.equal(declaresUrlElicitation({ elicitation: { url: {} } }), true);
    assert.equal(declaresUrlElicitation({ elicitation: { form: {}, url: {} } }), true);
    assert.equal(declaresUrlElicitation({ elicitation: {} }), false, 'empty elicitation means form mode only');
    assert.equal(declaresUrlElicitation({ elicitation: { url: true } }), false);
    assert.equal(declaresUrlElicitation(undefined), false);
  });

  test('protocol versions compare as dates; unknown is older', () => {
    assert.equal(protocolAtLeast('2025-11-25', '2025-11-25'), true);
    assert.equal(protocolAtLeast('2026-07-28', '2025-11-25'), true);
    assert.equal(protocolAtLeast('2025-06-18', '2025-11-25'), false);
    assert.equal(protocolAtLeast(undefined, '2025-11-25'), false);
    assert.equal(protocolAtLeast('latest', '2025-11-25'), false);
  });

  test('per (upstream, session) in the store; a header creates nothing; the TTL slides with use, refreshed once per touch interval', async () => {
    let now = 1_000;
    const store = createMemoryStore({ now: () => now });
    const memory = createClientCapabilities({ store, ttlMs: 100, touchIntervalMs: 10, now: () => now });
    const s1 = { upstream: 'a', mcpSessionId: 's1' };
    await memory.recordInitialize({ ...s1, capabilities: { elicitation: { url: {} } } });
    await memory.noteProtocolVersion({ ...s1, protocolVersion: '2025-11-25' });
    await memory.noteProtocolVersion({ upstream: 'a', mcpSessionId: 'nobody', protocolVersion: '2025-11-25' });
    assert.deepEqual(await memory.get(s1), { elicitationUrl: true, protocolVersion: '2025-11-25' });
    assert.equal(await memory.get({ upstream: 'b', mcpSessionId: 's1' }), undefined, 'another upstream does not share the session');
    assert.equal(await memory.get({ upstream: 'a', mcpSessionId: 'nobody' }), undefined, 'unknown sessions are not created by a header');

    now += 95;
    await memory.noteProtocolVersion({ ...s1, protocolVersion: '2025-11-25' });
    now += 95;
    assert.ok(await memory.get(s1), 'use slid the TTL');
    now += 100;
    assert.equal(await memory.get(s1), undefined, 'forgotten a TTL after the last use');
  });

  test('another replica (its own records over the same store) sees what this one recorded; keys hold no session id', async () => {
    const keys: string[] = [];
    const backend = createMemoryStore();
    // The store as the replicas use it, recording every key they name.
    const store: Store = { ...backend, get: (key, signal) => (keys.push(key), backend.get(key, signal)), set: (key, value, ttl, signal) => (keys.push(key), backend.set(key, value, ttl, signal)) };
    const replicaA = createClientCapabilities({ store });
    const replicaB = createClientCapabilities({ store });
    await replicaA.recordInitialize({ upstream: 'a', mcpSessionId: 'mcp-session-secret-1', sessionId: 'sid-secret-1', capabilities: { elicitation: { url: {} } } });
    await replicaB.noteProtocolVersion({ upstream: 'a', mcpSessionId: 'mcp-session-secret-1', protocolVersion: '2025-11-25' });
    assert.deepEqual(await replicaA.get({ upstream: 'a', mcpSessionId: 'mcp-session-secret-1' }), { elicitationUrl: true, protocolVersion: '2025-11-25' });
    // A re-initialize on A is not undone by B's cached copy.
    await replicaA.recordInitialize({ upstream: 'a', mcpSessionId: 'mcp-session-secret-1', capabilities: {} });
    await replicaB.noteProtocolVersion({ upstream: 'a', mcpSessionId: 'mcp-session-secret-1', protocolVersion: '2026-07-28' });
    assert.deepEqual(await replicaB.get({ upstream: 'a', mcpSessionId: 'mcp-session-secret-1' }), { elicitationUrl: false, protocolVersion: '2026-07-28' });
    assert.ok(keys.length > 0);
    for (const key of keys) assert.ok(!key.includes('secret'), `a store key holds an id: ${key}`);
  });

  test('a session this replica noted within the touch interval costs no store call and no promise; a new version or an elapsed interval writes again', async () => {
    let now = 1_000;
    let calls = 0;
    const backend = createMemoryStore({ now: () => now });
    const store: Store = { ...backend, get: (key, signal) => (calls++, backend.get(key, signal)), compareAndSet: (key, expected, next, ttl, signal) => (calls++, backend.compareAndSet(key, expected, next, ttl, signal)) };
    const memory = createClientCapabilities({ store, ttlMs: 100, touchIntervalMs: 10, now: () => now });
    const session = { upstream: 'a', mcpSessionId: 'm-1', sessionId: 'sid-1' };
    await memory.recordInitialize({ ...session, capabilities: {} });
    await memory.noteProtocolVersion({ ...session, protocolVersion: '2025-06-18' });
    const afterFirst = calls;
    assert.ok(afterFirst > 0, 'the first note writes the version');
    assert.equal(memory.noteProtocolVersion({ ...session, protocolVersion: '2025-06-18' }), undefined);
    assert.equal(calls, afterFirst);
    await memory.noteProtocolVersion({ ...session, protocolVersion: '2025-11-25' });
    assert.ok(calls > afterFirst, 'a new version is written');
    assert.equal((await memory.get(session))?.protocolVersion, '2025-11-25');
    const beforeTouch = calls;
    now += 10;
    await memory.noteProtocolVersion({ ...session, protocolVersion: '2025-11-25' });
    assert.ok(calls > beforeTouch, 'the TTL is slid once the touch interval has passed');
  });

  test('a store outage is an error, never "unknown session"', async () => {
    const store = createMemoryStore();
    const memory = createClientCapabilities({ store });
    await store.close();
    await assert.rejects(memory.get({ upstream: 'a', mcpSessionId: 's' }), { name: 'StoreUnavailableError' });
  });

  test('a stateless upstream: the agent is known by our sid; the MCP session wins when both are known', async () => {
    const memory = createClientCapabilities({ store: createMemoryStore() });
    await memory.recordInitialize({ upstream: 'a', sessionId: 'sid-1', capabilities: { elicitation: { url: {} } } });
    await memory.noteProtocolVersion({ upstream: 'a', sessionId: 'sid-1', protocolVersion: '2025-11-25' });
    assert.deepEqual(await memory.get({ upstream: 'a', sessionId: 'sid-1' }), { elicitationUrl: true, protocolVersion: '2025-11-25' });
    assert.equal(await memory.get({ upstream: 'a' }), undefined);
    await memory.recordInitialize({ upstream: 'a', mcpSessionId: 'm-1', capabilities: {} });
    assert.equal((await memory.get({ upstream: 'a', mcpSessionId: 'm-1', sessionId: 'sid-1' }))?.elicitationUrl, false);
  });

  test('options are validated at construction', () => {
    const store = createMemoryStore();
    assert.throws(() => createClientCapabilities({ store, maxCached: 0 }), TypeError);
    assert.throws(() => createClientCapabilities({ store, ttlMs: -1 }), TypeError);
    assert.throws(() => createClientCapabilities({ store, ttlMs: 100, touchIntervalMs: 100 }), TypeError);
  });
});
