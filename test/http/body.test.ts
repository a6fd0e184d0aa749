import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { readBody } from '../../src/http/body.ts';
import { HttpError } from '../../src/http/errors.ts';

/**
 * readBody on real sockets: it must settle whatever the client does, since a handler that
 * awaits it forever holds its request (and the access-log line) open.
 */
describe('readBody', () => {
  const servers: Server[] = [];
  after(() => Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve)))));

  /** Starts a server that hands each request to `onRequest`, and sends it one request. */
  async function serve(onRequest: (req: IncomingMessage) => void, send: (port: number) => void): Promise<void> {
    const server = createServer((req) => onRequest(req));
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    send((server.address() as AddressInfo).port);
  }

  it('reads a chunked body whole', async () => {
    const body = await new Promise<Buffer>((resolve, reject) => {
      void serve(
        (req) => {
          readBody(req, 1000).then(resolve, reject);
          req.on('end', () => req.socket.end('HTTP/1.1 204 No Content\r\n\r\n'));
        },
        (port) => {
          const r = request({ port, host: '127.0.0.1', method: 'POST' });
          r.on('error', () => undefined);
          r.write('{"a":');
          setImmediate(() => r.end('1}'));
        },
      );
    });
    assert.equal(body.toString(), '{"a":1}');
  });

  it('refuses a request the client abandoned before the read started', async () => {
    const outcome = await new Promise<unknown>((resolve) => {
      void serve(
        (req) => {
          req.socket.destroy();
          // As a handler that awaited something else first.
          setTimeout(() => readBody(req, 1000).then(() => 'read', (error: unknown) => error).then(resolve), 20);
        },
        (port) => {
          const r = request({ port, host: '127.0.0.1', method: 'POST', headers: { 'content-length': '100' } });
          r.on('error', () => undefined);
          r.write('x'.repeat(10));
        },
      );
    });
    assert.ok(outcome instanceof HttpError, 'rejected with an HTTP error');
    assert.equal(outcome.status, 400);
  });
});
