/**
 * notifications/elicitation/complete on a forwarded GET stream: written between two
 * of the upstream's events, never inside one; only to the session that started the flow; only
 * where the protocol version has it. Real sockets: a raw SSE upstream we can pause mid-event.
 */
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { CredentialSource } from '../../src/credentials/types.ts';
import { elicitationCompleteEvent } from '../../src/gateway/stream-registry.ts';
import { PRINCIPAL, startGateway, type TestGateway } from './challenge.fixture.ts';

describe('elicitation/complete on a forwarded stream', () => {
  let gateway: TestGateway;
  const upstreamStreams: ServerResponse[] = [];
  const upstream = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
    res.flushHeaders();
    upstreamStreams.push(res);
  });
  const aborts: AbortController[] = [];

  before(async () => {
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const credentials: CredentialSource = { mode: 'none', headers: async () => ({}), rejected: async () => ({ action: 'pass' }) };
    gateway = await startGateway([{ name: 'sse', url: new URL(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}/mcp`), credentials }]);
  });

  after(async () => {
    for (const a of aborts) a.abort();
    for (const res of upstreamStreams) res.end();
    await gateway?.close();
    upstream.closeAllConnections();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
  });

  async function openStream(mcpSessionId: string, protocolVersion: string) {
    const abort = new AbortController();
    aborts.push(abort);
    const response = await fetch(new URL('/sse/mcp', gateway.url), {
      headers: { accept: 'text/event-stream', 'mcp-session-id': mcpSessionId, 'mcp-protocol-version': protocolVersion },
      signal: abort.signal,
    });
    assert.equal(response.status, 200);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    return {
      /** Reads until the received text ends with `suffix`. */
      async readUntil(suffix: string): Promise<string> {
        while (!text.endsWith(suffix)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`stream ended before ${JSON.stringify(suffix)}; got ${JSON.stringify(text)}`);
          text += value;
        }
        return text;
      },
    };
  }

  test('our event waits for the end of the upstream event, across a blank line split over two chunks', async () => {
    const agent = await openStream('session-1', '2025-11-25');
    const upstreamSide = upstreamStreams.at(-1)!;
    const part1 = 'event: message\nid: 7\ndata: {"jsonrpc":"2.0","method":"notifications/message",';
    const part2 = '"params":{"level":"info","data":"x"}}\n';
    upstreamSide.write(part1);
    await agent.readUntil(part1);

    assert.equal(gateway.streams.notifyElicitationComplete({ upstream: 'sse', mcpSessionId: 'session-1', sessionId: 'someone-else', elicitationId: 'e-1' }), 0, 'another sid hears nothing');
    assert.equal(gateway.streams.notifyElicitationComplete({ upstream: 'sse', mcpSessionId: 'session-1', sessionId: PRINCIPAL.sessionId, elicitationId: 'e-1' }), 1);

    upstreamSide.write(part2);
    await agent.readUntil(part2);
    upstreamSide.write('\n');
    const ours = elicitationCompleteEvent('e-1');
    const all = await agent.readUntil(ours);
    assert.equal(all, `${part1}${part2}\n${ours}`);
    assert.deepEqual(JSON.parse(ours.split('\n')[1]!.slice('data: '.length)), {
      jsonrpc: '2.0',
      method: 'notifications/elicitation/complete',
      params: { elicitationId: 'e-1' },
    });
  });

  test('at an event boundary the event goes out at once', async () => {
    const agent = await openStream('session-2', '2026-07-28');
    const ours = elicitationCompleteEvent('e-2');
    assert.equal(gateway.streams.notifyElicitationComplete({ upstream: 'sse', mcpSessionId: 'session-2', sessionId: PRINCIPAL.sessionId, elicitationId: 'e-2' }), 1);
    assert.equal(await agent.readUntil(ours), ours);
  });

  test('a 2025-06-18 session has no such notification: nothing is written', async () => {
    await openStream('session-3', '2025-06-18');
    const before = gateway.streams.size;
    assert.ok(before >= 1);
    assert.equal(gateway.streams.notifyElicitationComplete({ upstream: 'sse', mcpSessionId: 'session-3', sessionId: PRINCIPAL.sessionId, elicitationId: 'e-3' }), 0);
    assert.equal(gateway.streams.notifyElicitationComplete({ upstream: 'sse', mcpSessionId: undefined, sessionId: PRINCIPAL.sessionId, elicitationId: 'e-3' }), 0);
  });

  test('a stream leaves the registry when the agent goes away', async () => {
    const start = gateway.streams.size;
    await openStream('session-4', '2025-11-25');
    await until(() => gateway.streams.size === start + 1);
    aborts.at(-1)!.abort();
    await until(() => gateway.streams.size === start);
  });
});

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}
