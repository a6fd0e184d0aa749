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
