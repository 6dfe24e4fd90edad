// OpenTelemetry tracing, off by default. When `tracing.enabled` is set, the SDK
// (@opentelemetry/sdk-node, imported only then) exports spans over OTLP/HTTP (JSON) in batches:
// one SERVER span per NFS or MOUNT call (`nfs.WRITE`), with CLIENT children for the database
// (`db.query`, `db.transaction`) and block store calls (`s3.put`, `filesystem.get`, ...) it makes.
// Children find their parent through the SDK's AsyncLocalStorage context manager.
//
// The tracer is process-wide, as the OpenTelemetry API's global provider is. When tracing is off no
// SDK is loaded, and every instrumented call costs one check of `tracingEnabled()`.
import { context, diag, DiagLogLevel, SpanKind, SpanStatusCode, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { errorMessage } from '../error-message.js';

export { SpanKind, type Span } from '@opentelemetry/api';

let tracer: Tracer | null = null;

/** How long shutdown waits for the last spans to be exported. */
const SHUTDOWN_EXPORT_MS = 5_000;

/** True while the SDK is running: instrumented code starts spans only then. */
export function tracingEnabled(): boolean {
  return tracer !== null;
}

export interface TracingOptions {
  /** OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces. */
  endpoint: string;
  serviceName: string;
  /** Fraction of traces recorded (0..1), decided at the root span; children follow their parent. */
  sampleRatio: number;
  log?: Logger;
}

export interface Tracing {
  /** Stops starting spans and exports the ones not yet sent. */
  shutdown(): Promise<void>;
}

/** Starts the SDK (once per process) and makes `tracingEnabled()` true. */
export async function startTracing(opts: TracingOptions): Promise<Tracing> {
  if (tracer !== null) throw new Error('tracing is already started in this process');
  const [{ NodeSDK }, { OTLPTraceExporter }, { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler }] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/sdk-trace'),
  ]);
  const log = opts.log;
  if (log) {
    // The SDK's own problems (an exporter that cannot reach the collector) go to our log, at most
    // one line a minute: a collector that is down must not flood it.
    let last = 0;
    let suppressed = 0;
    const warn = (message: string, ...args: unknown[]): void => {
      const now = Date.now();
      if (now - last < 60_000) {
        suppressed++;
        return;
      }
      last = now;
      const err = args.find((a) => a instanceof Error);
      log.warn({ ...(err ? { err } : {}), suppressed }, `tracing: ${diagText(message)}`);
      suppressed = 0;
    };
    const ignore = (): void => undefined;
    diag.setLogger({ error: warn, warn, info: ignore, debug: ignore, verbose: ignore }, DiagLogLevel.WARN);
  }
  const sdk = new NodeSDK({
    serviceName: opts.serviceName,
    // A busy server makes thousands of spans a second: a deeper queue than the default 2048 drops
    // fewer of them between exports.
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: new OTLPTraceExporter({ url: opts.endpoint }),
        maxQueueSize: 16_384,
        maxExportBatchSize: 2_048,
        scheduledDelayMillis: 2_000,
      }),
    ],
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(opts.sampleRatio) }),
    // Traces only: no metric readers or log exporters from OTEL_* defaults, no auto-instrumentation.
    metricReaders: [],
    logRecordProcessors: [],
    instrumentations: [],
  });
  sdk.start();
  const t = trace.getTracer('dittofs');
  tracer = t;
  let done: Promise<void> | null = null;
  return {
    shutdown() {
      done ??= (async () => {
        if (tracer === t) tracer = null;
        // A collector that is down must not hold the shutdown for the exporter's retries.
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), SHUTDOWN_EXPORT_MS);
        });
        try {
          const r = await Promise.race([sdk.shutdown().then(() => 'done' as const), timeout]);
          if (r === 'timeout') log?.warn({ ms: SHUTDOWN_EXPORT_MS }, 'tracing: the last spans could not be exported in time');
        } catch (err) {
          log?.warn({ err }, 'tracing: the last spans could not be exported');
        } finally {
          clearTimeout(timer);
          if (log) diag.disable();
        }
      })();
      return done;
    },
  };
}

/** The SDK's diagnostics are sometimes a serialized error: its message is enough. */
function diagText(message: string): string {
  if (message.startsWith('{')) {
    try {
      const m = (JSON.parse(message) as { message?: unknown }).message;
      if (typeof m === 'string') return m;
    } catch {
      // Not JSON after all.
    }
  }
  return message.length > 500 ? `${message.slice(0, 500)}...` : message;
}

/**
 * Starts a span as a child of the active one, or null when tracing is off. The caller ends it
 * (see `endSpan`); `runInSpan` makes it the parent of spans started inside.
 */
export function startSpan(name: string, kind: SpanKind, attributes?: Attributes): Span | null {
  return tracer === null ? null : tracer.startSpan(name, { kind, attributes });
}

/** Runs `fn` with `span` as the active span, so that spans started inside become its children. */
export function runInSpan<T>(span: Span, fn: () => T): T {
  return context.with(trace.setSpan(context.active(), span), fn);
}

/** Records a failure on a span: ERROR status, and the exception as an event. */
export function failSpan(span: Span, err: unknown): void {
  if (err instanceof Error) span.recordException(err);
  span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
}

/** Ends a span, marking it failed with `message` if given. */
export function endSpan(span: Span, errorMessage?: string): void {
  if (errorMessage !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage });
  span.end();
}

/**
 * Runs an async call in a span of its own (a child of the active span), marking the span failed
 * when the call rejects. With tracing off it only calls `fn`.
 */
export async function traced<T>(name: string, kind: SpanKind, attributes: Attributes, fn: () => Promise<T>): Promise<T> {
  const t = tracer;
  if (t === null) return fn();
  const span = t.startSpan(name, { kind, attributes });
  try {
    return await context.with(trace.setSpan(context.active(), span), fn);
  } catch (err) {
    failSpan(span, err);
    throw err;
  } finally {
    span.end();
  }
}

/** Sets an attribute on the active span (e.g. the share, once a handle is decoded). */
export function setActiveSpanAttribute(key: string, value: string | number | boolean): void {
  if (tracer === null) return;
  trace.getActiveSpan()?.setAttribute(key, value);
}
