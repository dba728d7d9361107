/**
 * The gRPC transport: lazily created channels, failover between gateways, retries of
 * UNAVAILABLE with backoff, and error translation at every call.
 *
 * The gateways are a static list (`LATCHKEY_ADDR=a:7400,b:7400`) or the replicas Consul lists
 * as passing (`consul://AGENT/latchkey`, kept current by `ReplicaList`). A channel is kept per
 * address; one to a replica that left the list is not closed (a stream may still run on it).
 *
 * `@grpc/grpc-js` is imported here and nowhere else in the SDK (the generated stubs aside).
 */

import * as grpc from "@grpc/grpc-js";

import { Cancelled, Internal, LatchkeyError, statusCodeName } from "./errors.js";
import { ReplicaList } from "./replicas.js";
import { Backoff, isRetryable, sleep } from "./retry.js";
import type { ClientSettings, Endpoint } from "./settings.js";
import { injectTrace, loadTraceApi, type TraceApi } from "./trace.js";

/** A unary method as the generated service definitions describe it. */
export interface UnaryMethod<Req, Res> {
  readonly path: string;
  readonly responseStream: false;
  requestSerialize(value: Req): Buffer;
  responseDeserialize(value: Buffer): Res;
}

/** A server-streaming method as the generated service definitions describe it. */
export interface StreamMethod<Req, Res> {
  readonly path: string;
  readonly responseStream: true;
  requestSerialize(value: Req): Buffer;
  responseDeserialize(value: Buffer): Res;
}

/** Per-call options of every SDK method that talks to the gateway. */
export interface CallOptions {
  /** Aborts the call (and its retries); the call then rejects with `Cancelled`. */
  signal?: AbortSignal | undefined;
  /** Deadline of each attempt, milliseconds (default: the client's `timeoutMs`). */
  timeoutMs?: number | undefined;
}

// Detect dead connections while streams are quiet, and reconnect quickly after a failover
// (the same channel arguments as the Python SDK's).
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 2_000,
};

function retryAfterMs(metadata: grpc.Metadata | undefined): number | undefined {
  const value = metadata?.get("retry-after")[0];
  if (value === undefined) return undefined;
  const seconds = Number(value.toString());
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}

/** The one mapping from a gRPC error to the SDK's error tree. */
export function translate(err: unknown): LatchkeyError {
  if (err instanceof LatchkeyError) return err;
  const status = err as Partial<grpc.ServiceError> | undefined;
  if (status !== undefined && typeof status.code === "number") {
    const code = statusCodeName(status.code);
    const ErrorClass = LatchkeyError.forCode(code);
    const message = status.details || `the gateway call failed with ${code}`;
    return new ErrorClass(message, { cause: err, retryAfterMs: retryAfterMs(status.metadata), code });
  }
  const reason = err instanceof Error ? err.message : String(err);
  return new Internal(`the gateway call failed: ${reason}`, { cause: err });
}

function aborted(signal: AbortSignal): Cancelled {
  return new Cancelled("the call was aborted", { cause: signal.reason });
}

/** A server stream whose errors (also those raised mid-iteration) are SDK errors. */
export class Stream<T> implements AsyncIterable<T> {
  constructor(private readonly call: grpc.ClientReadableStream<T>) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    try {
      for await (const message of this.call) yield message as T;
    } catch (err) {
      throw translate(err);
    }
  }

  /** End the call (the server sees CANCELLED; the iteration ends with `Cancelled`). */
  cancel(): void {
    this.call.cancel();
  }
}

function key(endpoint: Endpoint): string {
  return `${endpoint.tls ? "tls" : "plaintext"} ${endpoint.target}`;
}

/** Channels to one or more gateways; the active one changes when a call finds it down. */
export class Transport {
  private readonly clients = new Map<string, grpc.Client>();
  /** The gateways to fail over between, now. */
  private endpoints: readonly Endpoint[];
  private active: Endpoint | undefined;
  private readonly replicas: ReplicaList | undefined;
  private closed = false;

  constructor(
    readonly settings: ClientSettings,
    private readonly backoff = new Backoff(),
    /** `@opentelemetry/api` when the application has it: calls carry the active trace context. */
    private readonly trace: TraceApi | null = loadTraceApi(),
  ) {
    this.endpoints = settings.endpoints;
    this.active = this.endpoints[0];
    if (settings.replicas !== undefined) {
      this.replicas = new ReplicaList(settings.replicas, settings.replicasTls, (endpoints) =>
        this.setEndpoints(endpoints),
      );
    }
  }

  /** The gateway address currently in use (with `consul://`, before Consul answered: the
   * `consul://AGENT/SERVICE` address). */
  get address(): string {
    return this.active?.target ?? this.settings.replicas?.describe() ?? "";
  }

  /** A new list of gateways (from Consul); the active one stays while it is listed. */
  setEndpoints(endpoints: readonly Endpoint[]): void {
    this.endpoints = endpoints;
    const active = this.active;
    if (active === undefined || !endpoints.some((e) => key(e) === key(active))) this.active = endpoints[0];
  }

  /** The active gateway (with `consul://`: once Consul listed at least one). */
  private async endpoint(signal?: AbortSignal): Promise<Endpoint> {
    if (this.closed) throw new Cancelled("the client is closed");
    if (this.replicas !== undefined && this.active === undefined) await this.replicas.ready(signal);
    if (this.active === undefined) throw new LatchkeyError("the client has no gateway address");
    return this.active;
  }

  private client(endpoint: Endpoint): grpc.Client {
    const id = key(endpoint);
    let client = this.clients.get(id);
    if (client === undefined) {
      if (this.closed) throw new Cancelled("the client is closed");
      const { cacert, clientKey, clientCert } = this.settings;
      const credentials = endpoint.tls
        ? grpc.credentials.createSsl(cacert ?? null, clientKey ?? null, clientCert ?? null)
        : grpc.credentials.createInsecure();
      client = new grpc.Client(endpoint.target, credentials, CHANNEL_OPTIONS);
      this.clients.set(id, client);
    }
    return client;
  }

  /** @internal The metadata of every call: the token, and the active trace context. */
  metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.settings.token) metadata.set("authorization", `Bearer ${this.settings.token}`);
    injectTrace(metadata, this.trace);
    return metadata;
  }

  /** Move to the next gateway when the one that failed is still the active one. */
  failover(failed: Endpoint): void {
    const { endpoints, active } = this;
    if (active === undefined || key(active) !== key(failed) || endpoints.length === 0) return;
    const at = endpoints.findIndex((e) => key(e) === key(failed));
    this.active = endpoints[(at + 1) % endpoints.length]; // it left the list meanwhile: the first
  }

  private attempt<Req, Res>(
    endpoint: Endpoint,
    method: UnaryMethod<Req, Res>,
    request: Req,
    options: CallOptions,
  ): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      const { signal } = options;
      if (signal?.aborted) {
        reject(aborted(signal));
        return;
      }
      const deadline = Date.now() + (options.timeoutMs ?? this.settings.timeoutMs);
      const onAbort = (): void => call.cancel();
      const call = this.client(endpoint).makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        this.metadata(),
        { deadline },
        (err, value) => {
          signal?.removeEventListener("abort", onAbort);
          if (signal?.aborted) reject(aborted(signal));
          else if (err) reject(translate(err));
          else resolve(value as Res);
        },
      );
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Call a unary RPC; UNAVAILABLE is retried (on the next gateway) within the retry deadline. */
  async unary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, options: CallOptions = {}): Promise<Res> {
    const deadline = performance.now() + this.settings.retryDeadlineMs;
    const { signal } = options;
    for (let attempt = 0; ; attempt++) {
      let endpoint: Endpoint | undefined;
      let error: LatchkeyError;
      try {
        endpoint = await this.endpoint(signal); // with consul://: Unavailable until one is listed
        return await this.attempt(endpoint, method, request, options);
      } catch (err) {
        error = translate(err);
      }
      if (signal?.aborted || !isRetryable(error)) throw error;
      if (endpoint !== undefined) this.failover(endpoint);
      const wait = this.backoff.delayMs(attempt, error.retryAfterMs);
      if (performance.now() + wait > deadline) throw error;
      if (!(await sleep(wait, signal))) throw aborted(signal!);
    }
  }

  /** Open a server stream on the active gateway (with `consul://`: once Consul listed one);
   * returns it with the gateway. */
  async stream<Req, Res>(
    method: StreamMethod<Req, Res>,
    request: Req,
    signal?: AbortSignal,
  ): Promise<{ stream: Stream<Res>; gateway: Endpoint }> {
    const gateway = await this.endpoint(signal);
    const call = this.client(gateway).makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      this.metadata(),
      {},
    );
    return { stream: new Stream(call), gateway };
  }

  /** Stop the Consul query (if any) and close every channel; calls in flight end with
   * `Cancelled`. */
  async close(): Promise<void> {
    this.closed = true;
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
    await this.replicas?.close();
  }
}
