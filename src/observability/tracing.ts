/**
 * OpenTelemetry traces without the OpenTelemetry SDK: spans carried through async code with
 * `AsyncLocalStorage`, batched, and POSTed as OTLP/HTTP JSON to `{endpoint}/v1/traces` (`otlp-exporter.ts`).
 *
 * Optional (`observability.otlp.endpoint`). Without it the tracer is one shared no-op object:
 * callers check `tracer.enabled` before doing anything per request, so the hot path stays as it
 * was. Exporting never affects a request: a slow or failing collector loses spans (counted), never
 * delays or fails an answer.
 *
 * Span attributes never hold secrets: no tokens, no Authorization values, no session ids.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import type { Logger } from './logger.ts';
import { createOtlpExporter, type OtlpAttribute, type OtlpExporter } from './otlp-exporter.ts';

/** OTLP span kinds (opentelemetry/proto/trace/v1/trace.proto). */
export const SpanKind = { INTERNAL: 1, SERVER: 2, CLIENT: 3 } as const;
export type SpanKindValue = (typeof SpanKind)[keyof typeof SpanKind];

type AttributeValue = string | number | boolean;

/** A span being recorded. */
export interface Span {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string | undefined;
  name: string;
  /** Sets an attribute; never pass a token, a credential or a full session id. */
  set(key: string, value: AttributeValue | undefined): void;
  /** Marks the span failed (status ERROR) with a short description. */
  fail(message: string): void;
  /** Ends the span and queues it for export; later calls do nothing. */
  end(): void;
  /** The W3C traceparent naming this span as the parent (for a request sent on its behalf). */
  traceparent(): string;
}

/** Starts, carries and exports spans. */
export interface Tracer {
  /** False for the no-op tracer: callers skip every tracing step, allocation included. */
  readonly enabled: boolean;
  /**
   * Starts a span: a child of `remoteParent` (an incoming W3C `traceparent`) when it is valid,
   * else of the current span, else the root of a new trace. It does not become current.
   */
  start(name: string, options?: { kind?: SpanKindValue; remoteParent?: string | string[]; attributes?: Record<string, AttributeValue | undefined> }): Span;
  /** Runs `fn` with `span` as the current span (its children find it without being passed it). */
  withSpan<T>(span: Span, fn: () => T): T;
  /** Runs `fn` in a new child span of the current one, ended (and failed on a throw) when `fn` settles. */
  trace<T>(name: string, fn: (span: Span) => Promise<T>, options?: { kind?: SpanKindValue }): Promise<T>;
  /** Spans dropped because the queue was full, and export requests that failed. */
  stats(): { dropped: number; exportFailures: number; exported: number };
  /** Exports every queued span and stops the timer (app.close()). */
  shutdown(): Promise<void>;
}

/** Options of {@link createTracer}. */
export interface TracerOptions {
  /** The collector's base URL; spans go to `{endpoint}/v1/traces`. */
  endpoint: string;
  /** `service.name` of the resource. Default `mcpgate`. */
  serviceName?: string;
  logger: Logger;
  /** Export period. Default 1000 ms. */
  flushIntervalMs?: number;
  /** Spans per export request; a full batch is sent at once. Default 512. */
  maxBatch?: number;
  /** Spans held at most, queued or being sent (a slow collector must not grow memory); beyond it new spans are dropped and counted. Default 2048. */
  maxQueue?: number;
  /** Time allowed per export request. Default 5000 ms. */
  exportTimeoutMs?: number;
}

const NOOP_SPAN: Span = {
  traceId: '00000000000000000000000000000000',
  spanId: '0000000000000000',
  parentSpanId: undefined,
  name: '',
  set: () => undefined,
  fail: () => undefined,
  end: () => undefined,
  traceparent: () => '',
};

/** The tracer when tracing is off: built once, does nothing, allocates nothing. */
export const NOOP_TRACER: Tracer = {
  enabled: false,
  start: () => NOOP_SPAN,
  withSpan: (_span, fn) => fn(),
  trace: (_name, fn) => fn(NOOP_SPAN),
  stats: () => ({ dropped: 0, exportFailures: 0, exported: 0 }),
  shutdown: async () => undefined,
};

const TRACEPARENT = /^00-([\da-f]{32})-([\da-f]{16})-[\da-f]{2}$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** The tracer `observability.otlp` asks for: {@link NOOP_TRACER} when it is absent. */
export function tracerFor(otlp: { endpoint: string; serviceName: string } | undefined, logger: Logger): Tracer {
  return otlp ? createTracer({ endpoint: otlp.endpoint, serviceName: otlp.serviceName, logger }) : NOOP_TRACER;
}

/** What a new span needs from its tracer. */
interface SpanContext {
  /** The current span, carried through async code. */
  readonly current: AsyncLocalStorage<Span>;
  /** Now, in epoch nanoseconds (decimal, as OTLP JSON writes it). */
  readonly nowNs: () => string;
  /** Where the span goes when it ends. */
  readonly exporter: OtlpExporter;
}

type StartOptions = NonNullable<Parameters<Tracer['start']>[1]>;

/** A tracer exporting to an OTLP/HTTP JSON collector. */
export function createTracer(options: TracerOptions): Tracer {
  const exporter = createOtlpExporter(options);
  const current = new AsyncLocalStorage<Span>();
  // Wall-clock origin plus a monotonic offset: span times are epoch nanoseconds that never go backwards.
  const originNs = BigInt(Date.now()) * 1_000_000n;
  const originHr = process.hrtime.bigint();
  const nowNs = () => (originNs + (process.hrtime.bigint() - originHr)).toString();
  const spans: SpanContext = { current, nowNs, exporter };
  const start = (name: string, startOptions: StartOptions = {}): Span => startSpan(spans, name, startOptions);

  return {
    enabled: true,
    start,
    withSpan: (span, fn) => current.run(span, fn),
    async trace(name, fn, traceOptions) {
      const span = start(name, { kind: traceOptions?.kind });
      try {
        return await current.run(span, () => fn(span));
      } catch (error) {
        span.fail(error instanceof Error ? error.name : 'error');
        throw error;
      } finally {
        span.end();
      }
    },
    stats: () => exporter.stats(),
    shutdown: () => exporter.shutdown(),
  };
}

/** The parent of a new span: a valid remote `traceparent`, else the current span, else none (a new trace). */
function parentOf(remote: string | string[] | undefined, current: Span | undefined): { traceId: string; spanId: string } | undefined {
  const match = typeof remote === 'string' ? TRACEPARENT.exec(remote) : null;
  // W3C Trace Context §3.2.2.3: all-zero ids are invalid; such a header starts a new trace.
  if (match && match[1] !== ZERO_TRACE && match[2] !== ZERO_SPAN) return { traceId: match[1]!, spanId: match[2]! };
  return current;
}

function startSpan(context: SpanContext, name: string, startOptions: StartOptions): Span {
  const parent = parentOf(startOptions.remoteParent, context.current.getStore());
  const traceId = parent?.traceId ?? randomBytes(16).toString('hex');
  const parentSpanId = parent?.spanId;
  const spanId = randomBytes(8).toString('hex');
  const attributes: OtlpAttribute[] = [];
  const status: { code: number; message?: string } = { code: 0 };
  const startTimeUnixNano = context.nowNs();
  let ended = false;
  const span: Span = {
    traceId,
    spanId,
    parentSpanId,
    name,
    set(key, value) {
      if (value === undefined) return;
      attributes.push({ key, value: attributeValue(value) });
    },
    fail(message) {
      status.code = 2;
      status.message = message.slice(0, 200);
    },
    end() {
      if (ended) return;
      ended = true;
      context.exporter.enqueue({
        traceId,
        spanId,
        ...(parentSpanId ? { parentSpanId } : {}),
        name: span.name,
        kind: startOptions.kind ?? SpanKind.INTERNAL,
        startTimeUnixNano,
        endTimeUnixNano: context.nowNs(),
        attributes,
        status,
      });
    },
    traceparent: () => `00-${traceId}-${spanId}-01`,
  };
  for (const key in startOptions.attributes) span.set(key, startOptions.attributes[key]);
  return span;
}

/** OTLP's typed value: integers as decimal strings (int64 in JSON), other numbers as doubles. */
function attributeValue(value: AttributeValue): OtlpAttribute['value'] {
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  return Number.isInteger(value) ? { intValue: String(value) } : { doubleValue: value };
}
