import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRegistry } from '../../src/observability/metrics.ts';

test('a series bound once (labels) counts into the same exposition as calls with the labels each time', () => {
  const bound = createRegistry();
  const unbound = createRegistry();
  const boundRequests = bound.counter('requests_total', 'requests');
  const boundLatency = bound.histogram('latency_seconds', 'latency', [0.1, 1]);
  const requests = unbound.counter('requests_total', 'requests');
  const latency = unbound.histogram('latency_seconds', 'latency', [0.1, 1]);

  const ok = boundRequests.labels({ status: '200', route: '/x' });
  const slow = boundLatency.labels({ route: '/x' });
  for (const seconds of [0.05, 0.5, 2]) {
    ok.inc();
    slow.observe(seconds);
    requests.inc({ route: '/x', status: '200' });
    latency.observe({ route: '/x' }, seconds);
  }
  boundRequests.inc({ route: '/x', status: '200' }, 2); // unbound calls land in the bound series too
  requests.inc({ route: '/x', status: '200' }, 2);

  assert.equal(bound.render(), unbound.render());
  assert.match(bound.render(), /^requests_total\{route="\/x",status="200"\} 5$/m);
  assert.match(bound.render(), /^latency_seconds_bucket\{le="0.1",route="\/x"\} 1$/m);
  assert.match(bound.render(), /^latency_seconds_count\{route="\/x"\} 3$/m);
});

test('a bound label set that needs escaping is escaped as the unbound one is', () => {
  const registry = createRegistry();
  registry.counter('c_total', 'c').labels({ upstream: 'a"b\\c' }).inc(3);
  assert.match(registry.render(), /^c_total\{upstream="a\\"b\\\\c"\} 3$/m);
});

test('one label set written in any order, or with a number for a string, is one series', () => {
  const registry = createRegistry();
  const calls = registry.counter('calls_total', 'calls');
  const latency = registry.histogram('latency_seconds', 'latency', [1]);
  const open = registry.gauge('open', 'open');
  calls.inc({ upstream: 'a', tool: 'echo', outcome: 'ok' });
  calls.inc({ outcome: 'ok', upstream: 'a', tool: 'echo' });
  calls.inc({ upstream: 'a', tool: 'echo', outcome: 'ok' }, 2);
  calls.inc({ upstream: 'a', tool: 'other', outcome: 'ok' });
  calls.inc({ status: 200 as unknown as string });
  calls.inc({ status: '200' });
  calls.inc();
  calls.inc({});
  latency.observe({ route: '/x', upstream: 'a' }, 0.5);
  latency.observe({ upstream: 'a', route: '/x' }, 2);
  open.inc({ upstream: 'a' });
  open.set({ upstream: 'a' }, 5);
  open.dec({ upstream: 'a' });
  const text = registry.render();
  assert.match(text, /^calls_total\{outcome="ok",tool="echo",upstream="a"\} 4$/m);
  assert.match(text, /^calls_total\{outcome="ok",tool="other",upstream="a"\} 1$/m);
  assert.match(text, /^calls_total\{status="200"\} 2$/m);
  assert.match(text, /^calls_total 2$/m);
  assert.equal(text.match(/^calls_total/gm)?.length, 4);
  assert.match(text, /^latency_seconds_count\{route="\/x",upstream="a"\} 2$/m);
  assert.match(text, /^latency_seconds_bucket\{le="1",route="\/x",upstream="a"\} 1$/m);
  assert.match(text, /^open\{upstream="a"\} 4$/m);
});
