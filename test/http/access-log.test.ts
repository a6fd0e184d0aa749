/**
 * The access-log line of every request is the line pino itself writes for the same fields,
 * byte for byte but the time: the same order, the same escaping, the same redaction (top-level
 * keys such as `token` or `code`, and the nested paths of a field holding an object), whatever
 * the route added to `ctx.log`. The reference is a logger built by createLogger, given the
 * fields the front door logs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createFrontDoor, type FrontDoor } from '../../src/http/server.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createGatewayMetrics, createRegistry } from '../../src/observability/metrics.ts';
import type { Route } from '../../src/http/router.ts';
import { HttpError } from '../../src/http/errors.ts';
import { captureLogs, type LogCapture } from '../support/logs.ts';
import { send } from '../gateway/http-client.ts';

/** What each route adds to its request's access-log line. */
const FIELDS: Record<string, Record<string, unknown>> = {
  plain: { upstream: 'up', rpc: 'tools/call', tool: 'echo', outcome: 'ok', sid: '3f2c9a7e' },
  escaped: { upstream: 'a"b\\c', tool: 'tab\there\u0001', long: 'x"'.repeat(80), emoji: 'caf\u00e9 \u{1F600}', sep: '\u2028' },
  mixed: { n: 5, negative: -0, fraction: 0.1 + 0.2, big: 1e21, inf: Infinity, nan: NaN, yes: true, no: false, nothing: null, skipped: undefined },
  secret: { token: 'tok-123', code: 42, state: true, password: null, 'set-cookie': 'a=b', upstream: 'up' },
  nested: { detail: { token: 'tok-123', headers: { authorization: 'Bearer x', accept: '*/*' }, fine: 1 }, upstream: 'up' },
  override: { status: 'custom', route: 'mine', ip: undefined },
  empty: {},
};
/** A tool name with a lone surrogate, as a client's JSON may carry (`"\\ud800"`). */
const SURROGATE = { tool: 'a\ud800b' };

describe('the access-log line', () => {
  let logs: LogCapture;
  let door: FrontDoor;
  let base: URL;

  before(async () => {
    logs = captureLogs();
    const routes: Route[] = Object.entries({ ...FIELDS, surrogate: SURROGATE }).map(([name, fields]) => ({
      method: 'GET',
      path: `/${name}`,
      name,
      handler: (ctx) => {
        Object.assign(ctx.log, fields);
        ctx.res.writeHead(204).end();
      },
    }));
    routes.push({ method: 'GET', path: '/refused', handler: () => Promise.reject(new HttpError(403, 'forbidden')) });
    door = createFrontDoor({
      routes,
      logger: createLogger({ level: 'info', destination: logs.destination }),
      metrics: createGatewayMetrics(createRegistry()),
      publicUrl: new URL('http://127.0.0.1'),
      trustedProxies: [],
    });
    const bound = await door.listen('127.0.0.1', 0);
    base = new URL(`http://127.0.0.1:${bound.port}`);
  });
  after(() => door.shutdown(1000));

  /** The line pino writes for the fields the front door logs, with the time of `line`. */
  function expected(line: Record<string, unknown>, path: string, route: string, status: number, fields: Record<string, unknown>): string {
    const reference = captureLogs();
    const logger = createLogger({ level: 'info', destination: reference.destination });
    const common = { msg: 'request', reqId: line.reqId, method: 'GET', path, route, status, ms: line.ms, ip: line.ip, completed: true };
    logger.info({ ...common, ...fields });
    return reference.lines[0]!.replace(/"time":"[^"]*"/, `"time":"${String(line.time)}"`);
  }

  async function lineOf(path: string): Promise<string> {
    const answer = await send(new URL(path, base));
    const reqId = answer.headers['x-request-id'];
    // The line is written when the response closes, just after the client has the answer.
    for (let i = 0; i < 100; i++) {
      const found = logs.lines.find((l) => l.includes(`"reqId":"${String(reqId)}"`));
      if (found) return found;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error(`no access-log line for ${path}`);
  }

  for (const [name, fields] of Object.entries(FIELDS)) {
    it(`is pino's line for the fields of ${name}`, async () => {
      const line = await lineOf(`/${name}?code=never-logged`);
      const parsed = JSON.parse(line) as Record<string, unknown>;
      assert.equal(line, expected(parsed, `/${name}`, name, 204, fields));
      assert.ok(!line.includes('never-logged'), 'the query is never logged');
      assert.ok(!line.includes('tok-123') && !line.includes('Bearer x'), 'redacted values never appear');
    });
  }

  it("is pino's line for a refused request and an unmatched path", async () => {
    const refused = await lineOf('/refused');
    assert.equal(refused, expected(JSON.parse(refused) as Record<string, unknown>, '/refused', '/refused', 403, { error: 'forbidden' }));
    const unmatched = await lineOf('/nowhere/%7e');
    assert.equal(unmatched, expected(JSON.parse(unmatched) as Record<string, unknown>, '/nowhere/%7e', 'unmatched', 404, { error: 'not_found' }));
  });

  it('keeps a lone surrogate a client sent: the line parses to the fields pino would write', async () => {
    // pino writes it raw (a write to a file makes it U+FFFD); an escape keeps it. Both parse back alike.
    const line = await lineOf('/surrogate');
    const parsed = JSON.parse(line) as Record<string, unknown>;
    assert.deepEqual(parsed, JSON.parse(expected(parsed, '/surrogate', 'surrogate', 204, SURROGATE)));
    assert.equal(parsed.tool, 'a\ud800b');
  });
});
