/**
 * Trace context propagation: when the application has `@opentelemetry/api` (an optional peer,
 * never a dependency of this SDK), every call carries the active context in its metadata
 * (W3C `traceparent`/`tracestate`, or whatever propagator the application registered);
 * without it, nothing is added.
 */

import { createRequire } from "node:module";

/** The part of `@opentelemetry/api` the SDK uses. */
export interface TraceApi {
  readonly context: { active(): unknown };
  readonly propagation: {
    inject(context: unknown, carrier: unknown, setter: { set(carrier: unknown, key: string, value: string): void }): void;
  };
}

/** Where the context goes: `grpc.Metadata` has this `set`. */
export interface Carrier {
  set(key: string, value: string): void;
}

const SETTER = {
  set(carrier: unknown, key: string, value: string): void {
    (carrier as Carrier).set(key, value);
  },
};

/** `@opentelemetry/api` as the application installed it, or null. Its state (the registered
 * propagator and context manager) is process-global, so this copy sees the application's. */
export function loadTraceApi(from: string = import.meta.url): TraceApi | null {
  try {
    const api = createRequire(from)("@opentelemetry/api") as Partial<TraceApi>;
    return api.context !== undefined && api.propagation !== undefined ? (api as TraceApi) : null;
  } catch {
    return null; // not installed: no propagation
  }
}

/** Put the active trace context into `carrier` (nothing when `api` is null). A propagator that
 * throws never fails the call. */
export function injectTrace(carrier: Carrier, api: TraceApi | null): void {
  if (api === null) return;
  try {
    api.propagation.inject(api.context.active(), carrier, SETTER);
  } catch {
    // tracing is best effort
  }
}
