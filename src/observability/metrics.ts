/**
 * A small Prometheus registry (text exposition format 0.0.4): counters, gauges and histograms
 * with labels. Label values must never hold secrets: callers pass upstream names,
 * methods and status codes only.
 */
type Labels = Record<string, string>;

interface Metric {
  render(): string;
}

const NEEDS_ESCAPE = /[\\"\n]/;

/**
 * A label set as `name="value",…` in name order, escaped per the text format: the series key
 * and its exposition at once. Values that need no escaping (all of ours) skip the replace chain;
 * the per-request series are bound once (`labels`) and never come here again.
 */
function labelKey(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length > 1) keys.sort();
  let key = '';
  for (let i = 0; i < keys.length; i++) {
    const value = String(labels[keys[i]!]);
    const escaped = NEEDS_ESCAPE.test(value) ? value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : value;
    key += `${i === 0 ? '' : ','}${keys[i]}="${escaped}"`;
  }
  return key;
}

/** One level of {@link seriesCache}: a label name, then its value, then the next name… */
interface CacheNode<T> {
  next: Map<string, CacheNode<T>>;
  series: T | undefined;
}

/**
 * `find` behind a cache keyed by the label names and values in the order the caller wrote them:
 * a hit walks a few maps and builds nothing, where `labelKey` lists, sorts and joins the labels
 * (about 0.5 µs and 1.3 KB of garbage for the three labels of a tool call, bench/README.md).
 * Whatever the order or the value types, a miss asks `find`, which keys by the canonical label
 * key, so every path to one label set ends at the same series. It grows with the series.
 */
function seriesCache<T>(find: (labels: Labels) => T): (labels: Labels) => T {
  const root: CacheNode<T> = { next: new Map(), series: undefined };
  const step = (node: CacheNode<T>, key: string) => {
    let next = node.next.get(key);
    if (!next) node.next.set(key, (next = { next: new Map(), series: undefined }));
    return next;
  };
  return (labels) => {
    let node = root;
    for (const name in labels) node = step(step(node, name), labels[name]!);
    return (node.series ??= find(labels));
  };
}

/** A monotonically increasing counter. */
export interface Counter {
  inc(labels?: Labels, by?: number): void;
}
/** A counter with its label values fixed: no label key built per call. */
export interface BoundCounter {
  inc(by?: number): void;
}
/** A counter of the registry: also hands out series bound to one label set, for hot paths. */
export interface CounterVec extends Counter {
  /** The series of `labels`, created when first used; keep it and call `inc` on it. */
  labels(labels: Labels): BoundCounter;
}
/** A value that goes up and down. */
export interface Gauge {
  inc(labels?: Labels, by?: number): void;
  dec(labels?: Labels, by?: number): void;
  set(labels: Labels, value: number): void;
}
/** Observations counted into cumulative buckets (seconds, by convention). */
export interface Histogram {
  observe(labels: Labels, value: number): void;
}
/** A histogram series with its label values fixed. */
export interface BoundHistogram {
  observe(value: number): void;
}
/** A histogram of the registry: also hands out series bound to one label set, for hot paths. */
export interface HistogramVec extends Histogram {
  /** The series of `labels`, created when first used (it appears in the exposition from then on). */
  labels(labels: Labels): BoundHistogram;
}

/** The default latency buckets, in seconds. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The registry: create metrics once at start-up, render on each scrape. */
export interface Registry {
  counter(name: string, help: string): CounterVec;
  gauge(name: string, help: string): Gauge;
  histogram(name: string, help: string, buckets?: number[]): HistogramVec;
  render(): string;
}

export function createRegistry(): Registry {
  const metrics: Metric[] = [];

  function scalar(name: string, help: string, type: 'counter' | 'gauge') {
    // One mutable cell per series, so a bound series adds without a lookup.
    const values = new Map<string, { value: number }>();
    metrics.push({
      render: () => {
        const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
        for (const [key, cell] of values) lines.push(`${name}${key ? `{${key}}` : ''} ${cell.value}`);
        return lines.join('\n');
      },
    });
    const cellOf = seriesCache((labels) => {
      const key = labelKey(labels);
      let cell = values.get(key);
      if (!cell) values.set(key, (cell = { value: 0 }));
      return cell;
    });
    const add = (labels: Labels = {}, by = 1) => {
      cellOf(labels).value += by;
    };
    return { add, cellOf };
  }

  return {
    counter(name, help) {
      const { add, cellOf } = scalar(name, help, 'counter');
      return {
        inc: add,
        labels(labels) {
          const cell = cellOf(labels);
          return { inc: (by = 1) => void (cell.value += by) };
        },
      };
    },
    gauge(name, help) {
      const { add, cellOf } = scalar(name, help, 'gauge');
      return {
        inc: add,
        dec: (labels = {}, by = 1) => add(labels, -by),
        set: (labels, value) => void (cellOf(labels).value = value),
      };
    },
    histogram(name, help, buckets = LATENCY_BUCKETS) {
      const series = new Map<string, { counts: number[]; sum: number; count: number; labels: Labels }>();
      metrics.push({
        render: () => {
          const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
          for (const s of series.values()) {
            buckets.forEach((le, i) => lines.push(`${name}_bucket{${labelKey({ ...s.labels, le: String(le) })}} ${s.counts[i]}`));
            lines.push(`${name}_bucket{${labelKey({ ...s.labels, le: '+Inf' })}} ${s.count}`);
            const key = labelKey(s.labels);
            lines.push(`${name}_sum${key ? `{${key}}` : ''} ${s.sum}`, `${name}_count${key ? `{${key}}` : ''} ${s.count}`);
          }
          return lines.join('\n');
        },
      });
      const seriesOf = seriesCache((labels) => {
        const key = labelKey(labels);
        let s = series.get(key);
        if (!s) series.set(key, (s = { counts: buckets.map(() => 0), sum: 0, count: 0, labels }));
        return s;
      });
      const observeInto = (s: { counts: number[]; sum: number; count: number }, value: number) => {
        for (let i = 0; i < buckets.length; i++) if (value <= buckets[i]!) s.counts[i]!++;
        s.sum += value;
        s.count++;
      };
      return {
        observe: (labels, value) => observeInto(seriesOf(labels), value),
        labels(labels) {
          const s = seriesOf(labels);
          return { observe: (value) => observeInto(s, value) };
        },
      };
    },
    render: () => metrics.map((m) => m.render()).join('\n') + '\n',
  };
}

/** The gateway's metrics, created once by the composition root. */
export function createGatewayMetrics(registry: Registry) {
  return {
    requests: registry.counter('mcpgate_http_requests_total', 'HTTP requests by route, upstream, method and status'),
    latency: registry.histogram('mcpgate_http_request_duration_seconds', 'Time to the last byte of the response'),
    openStreams: registry.gauge('mcpgate_open_streams', 'SSE responses currently open, by upstream'),
    bodyBytesInFlight: registry.gauge('mcpgate_request_body_bytes_in_flight', 'Bytes of MCP request bodies buffered now (bounded by server.maxBodyBytesInFlight)'),
    upstreamErrors: registry.counter('mcpgate_upstream_errors_total', 'Upstream failures by upstream and kind'),
    authFlows: registry.counter('mcpgate_auth_flows_total', 'Upstream OAuth flows by upstream and outcome (started, completed, failed)'),
    refreshes: registry.counter('mcpgate_token_refreshes_total', 'Token refreshes by kind (idp: the company IdP, per session; oauth: an upstream authorization server, with upstream) and outcome'),
    toolCalls: registry.counter('mcpgate_tool_calls_total', 'tools/call requests by upstream, tool (a name the upstream listed in tools/list, else "other") and outcome'),
    tokenExchanges: registry.counter('mcpgate_token_exchanges_total', 'RFC 8693 token exchanges by upstream and outcome (hit: served from the cache, miss: exchanged, failure: the exchange failed)'),
    storeErrors: registry.counter('mcpgate_store_errors_total', 'Storage operations that failed (the backend unavailable), by operation'),
    elicitationNotifications: registry.counter(
      'mcpgate_elicitation_notifications_total',
      'notifications/elicitation/complete by outcome, once per completed connection for the whole fleet (delivered: a stream on some replica got it; no_stream: none did; failed: the bus or the store failed)',
    ),
  };
}
export type GatewayMetrics = ReturnType<typeof createGatewayMetrics>;
