/**
 * The span exporter behind the tracer: finished spans queued, batched, and POSTed as OTLP/HTTP
 * JSON to `{endpoint}/v1/traces` (OpenTelemetry Protocol, "OTLP/HTTP" with the JSON encoding).
 *
 * Exporting never affects a request: a slow or failing collector loses spans (counted), never
 * delays or fails an answer, and never grows memory past `maxQueue` spans.
 */
import { fetch } from 'undici';
import type { Logger } from './logger.ts';

/** An attribute as OTLP JSON writes it (opentelemetry/proto/common/v1/common.proto, AnyValue). */
export interface OtlpAttribute {
  key: string;
  value: { stringValue: string } | { intValue: string } | { boolValue: boolean } | { doubleValue: number };
}

/** A finished span as OTLP JSON writes it (opentelemetry/proto/trace/v1/trace.proto): ids in hex, times in epoch nanoseconds. */
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: OtlpAttribute[];
  status: { code: number; message?: string };
}

/** Options of {@link createOtlpExporter}; the defaults are the tracer's (see `TracerOptions`). */
export interface OtlpExporterOptions {
  /** The collector's base URL; spans go to `{endpoint}/v1/traces`. */
  endpoint: string;
  /** `service.name` of the resource. Default `mcpgate`. */
  serviceName?: string | undefined;
  logger: Logger;
  /** Export period. Default 1000 ms. */
  flushIntervalMs?: number | undefined;
  /** Spans per export request; a full batch is sent at once. Default 512. */
  maxBatch?: number | undefined;
  /** Spans held at most, queued or being sent; beyond it new spans are dropped and counted. Default 2048. */
  maxQueue?: number | undefined;
  /** Time allowed per export request. Default 5000 ms. */
  exportTimeoutMs?: number | undefined;
}

/** What the tracer sees of its exporter. */
export interface OtlpExporter {
  /** Queues a finished span (or drops and counts it when the queue is full); never blocks. */
  enqueue(span: OtlpSpan): void;
  /** Spans dropped because the queue was full, export requests that failed, spans exported. */
  stats(): { dropped: number; exportFailures: number; exported: number };
  /** Exports every queued span, waits for every request in flight, and stops the timer. */
  shutdown(): Promise<void>;
}

/** Where and how one batch is sent. */
interface Collector {
  readonly url: string;
  readonly resource: { attributes: OtlpAttribute[] };
  readonly timeoutMs: number;
  readonly logger: Logger;
  readonly counts: { dropped: number; exportFailures: number; exported: number };
}

/** Creates the exporter; its flush timer is unref'd, so it never keeps the process alive. */
export function createOtlpExporter(options: OtlpExporterOptions): OtlpExporter {
  const maxBatch = options.maxBatch ?? 512;
  const maxQueue = options.maxQueue ?? 2048;
  const counts = { dropped: 0, exportFailures: 0, exported: 0 };
  const collector: Collector = {
    url: `${options.endpoint.replace(/\/+$/, '')}/v1/traces`,
    resource: { attributes: [{ key: 'service.name', value: { stringValue: options.serviceName ?? 'mcpgate' } }] },
    timeoutMs: options.exportTimeoutMs ?? 5000,
    logger: options.logger,
    counts,
  };
  let queue: OtlpSpan[] = [];
  const inFlight = new Set<Promise<void>>();
  let sendingSpans = 0;

  const timer = setInterval(() => flush(), options.flushIntervalMs ?? 1000);
  timer.unref();

  /** Sends what is queued, `maxBatch` spans per request; never throws. */
  function flush(): void {
    while (queue.length > 0) {
      const batch = queue.length <= maxBatch ? queue : queue.slice(0, maxBatch);
      queue = queue.length <= maxBatch ? [] : queue.slice(maxBatch);
      sendingSpans += batch.length;
      const sending = send(collector, batch).finally(() => {
        sendingSpans -= batch.length;
        inFlight.delete(sending);
      });
      inFlight.add(sending);
    }
  }

  return {
    enqueue(span) {
      if (queue.length + sendingSpans >= maxQueue) {
        counts.dropped++;
        return;
      }
      queue.push(span);
      if (queue.length >= maxBatch) flush();
    },
    stats: () => ({ ...counts }),
    async shutdown() {
      clearInterval(timer);
      flush();
      await Promise.all([...inFlight]);
      if (counts.dropped > 0 || counts.exportFailures > 0) {
        options.logger.info({ msg: 'traces: spans lost', dropped: counts.dropped, exportFailures: counts.exportFailures });
      }
    },
  };
}

/** POSTs one batch; a failure is counted and logged at debug, never thrown. */
async function send(collector: Collector, spans: OtlpSpan[]): Promise<void> {
  const { resource, counts } = collector;
  const body = JSON.stringify({ resourceSpans: [{ resource, scopeSpans: [{ scope: { name: 'mcpgate' }, spans }] }] });
  try {
    const response = await fetch(collector.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(collector.timeoutMs) });
    // The body is not needed, but an unread body holds the connection.
    await response.arrayBuffer().catch(() => undefined);
    if (!response.ok) throw new Error(`collector answered ${response.status}`);
    counts.exported += spans.length;
  } catch (error) {
    counts.exportFailures++;
    collector.logger.debug({ msg: 'trace export failed', spans: spans.length, err: error instanceof Error ? error.message : String(error) });
  }
}
