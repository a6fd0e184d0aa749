/** Channel choice and the per-session capability memory: pure functions, a fake clock. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { authRequiredReply, chooseChannel, type ChallengeSetting } from '../../src/gateway/challenge.ts';
import { createClientCapabilities, declaresUrlElicitation, protocolAtLeast } from '../../src/gateway/client-capabilities.ts';
import type { RpcInfo } from '../../src/gateway/jsonrpc.ts';

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

  test('per (upstream, session), expiring after the TTL since last use, least recently used evicted first', () => {
    let now = 1_000;
    const memory = createClientCapabilities({ maxEntries: 2, ttlMs: 100, now: () => now });
    const s1 = { upstream: 'a', mcpSessionId: 's1' };
    memory.recordInitialize({ ...s1, capabilities: { elicitation: { url: {} } } });
    memory.noteProtocolVersion({ ...s1, protocolVersion: '2025-11-25' });
    memory.noteProtocolVersion({ upstream: 'a', mcpSessionId: 'nobody', protocolVersion: '2025-11-25' });
    assert.deepEqual(memory.get(s1), { elicitationUrl: true, protocolVersion: '2025-11-25' });
    assert.equal(memory.get({ upstream: 'b', mcpSessionId: 's1' }), undefined, 'another upstream does not share the session');
    assert.equal(memory.size, 1, 'unknown sessions are not created by a header');

    memory.recordInitialize({ upstream: 'a', mcpSessionId: 's2', capabilities: {} });
    memory.get(s1); // s1 is now the most recently used
    memory.recordInitialize({ upstream: 'a', mcpSessionId: 's3', capabilities: {} });
    assert.equal(memory.get({ upstream: 'a', mcpSessionId: 's2' }), undefined, 's2 was evicted');
    assert.ok(memory.get(s1));

    now += 99;
    assert.ok(memory.get(s1), 'use slides the TTL');
    now += 100;
    assert.equal(memory.get(s1), undefined);
  });

  test('a stateless upstream: the agent is known by our sid; the MCP session wins when both are known', () => {
    const memory = createClientCapabilities();
    memory.recordInitialize({ upstream: 'a', sessionId: 'sid-1', capabilities: { elicitation: { url: {} } } });
    memory.noteProtocolVersion({ upstream: 'a', sessionId: 'sid-1', protocolVersion: '2025-11-25' });
    assert.deepEqual(memory.get({ upstream: 'a', sessionId: 'sid-1' }), { elicitationUrl: true, protocolVersion: '2025-11-25' });
    assert.equal(memory.get({ upstream: 'a' }), undefined);
    memory.recordInitialize({ upstream: 'a', mcpSessionId: 'm-1', capabilities: {} });
    assert.equal(memory.get({ upstream: 'a', mcpSessionId: 'm-1', sessionId: 'sid-1' })?.elicitationUrl, false);
  });

  test('options are validated at construction', () => {
    assert.throws(() => createClientCapabilities({ maxEntries: 0 }), TypeError);
    assert.throws(() => createClientCapabilities({ ttlMs: -1 }), TypeError);
  });
});
