/**
 * A request's abort signal (`ctx.signal`, passed to store calls and refreshes) is aborted when
 * the client goes away before its response finished, whether a handler took the signal before
 * the client left or only after; a request answered in full never aborts it. The front door
 * makes the signal only when a handler reads it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createLogger } from '../../src/observability/logger.ts';
import { createGatewayMetrics, createRegistry } from '../../src/observability/metrics.ts';
import { createFrontDoor, type FrontDoor } from '../../src/http/server.ts';
import type { Route } from '../../src/http/router.ts';
import { captureLogs } from '../support/logs.ts';

/** What each handler saw, by path: resolved when the handler is done. */
const seen = new Map<string, Promise<{ aborted: boolean; reason?: string; heardAbort?: boolean }>>();

function recorded(path: string, run: (settle: (value: { aborted: boolean; reason?: string; heardAbort?: boolean }) => void) => Route['handler']): Route {
  let settle!: (value: { aborted: boolean; reason?: string; heardAbort?: boolean }) => void;
  seen.set(path, new Promise((resolve) => (settle = resolve)));
  return { method: 'GET', path, handler: run((value) => settle(value)) };
}

describe('the request signal when the client goes away', () => {
  let door: FrontDoor;
  let port: number;

  before(async () => {
    const routes: Route[] = [
      // Takes the signal first, then waits: the client leaves while the handler holds it.
      recorded('/held', (settle) => (ctx) => {
        const signal = ctx.signal;
        let heardAbort = false;
        signal.addEventListener('abort', () => (heardAbort = true));
        ctx.res.once('close', () => settle({ aborted: signal.aborted, reason: (signal.reason as Error | undefined)?.message, heardAbort }));
      }),
      // Reads the signal only after the client has left.
      recorded('/late', (settle) => (ctx) => {
        ctx.res.once('close', () => setImmediate(() => settle({ aborted: ctx.signal.aborted, reason: (ctx.signal.reason as Error | undefined)?.message })));
      }),
      // Answered in full, the signal read after the response closed.
      recorded('/answered', (settle) => (ctx) => {
        ctx.res.once('close', () => setImmediate(() => settle({ aborted: ctx.signal.aborted })));
        ctx.res.writeHead(200, { 'content-type': 'text/plain' }).end('done');
      }),
    ];
    door = createFrontDoor({ routes, logger: createLogger({ level: 'info', destination: captureLogs().destination }), metrics: createGatewayMetrics(createRegistry()), publicUrl: new URL('http://127.0.0.1'), trustedProxies: [] });
    ({ port } = await door.listen('127.0.0.1', 0));
  });
  after(() => door.shutdown(1000));

  /** Sends GET `path` and hangs up after `leaveAfterMs` (or reads the whole answer when undefined). */
  function get(path: string, leaveAfterMs?: number): Promise<void> {
    return new Promise((resolve) => {
      const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', () => resolve());
      req.end();
      if (leaveAfterMs !== undefined) setTimeout(() => req.destroy(), leaveAfterMs);
    });
  }

  it('aborts the signal a handler holds, and tells its listener, when the client leaves', async () => {
    await get('/held', 50);
    assert.deepEqual(await seen.get('/held'), { aborted: true, reason: 'client closed the connection', heardAbort: true });
  });

  it('gives a handler that reads the signal after the client left one already aborted', async () => {
    await get('/late', 50);
    assert.deepEqual(await seen.get('/late'), { aborted: true, reason: 'client closed the connection' });
  });

  it('never aborts the signal of a request answered in full', async () => {
    await get('/answered');
    assert.deepEqual(await seen.get('/answered'), { aborted: false });
  });
});
