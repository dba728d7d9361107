/**
 * The gRPC transport: lazily created channels, failover between gateways, retries of
 * UNAVAILABLE with backoff, and error translation at every call.
 *
 * `@grpc/grpc-js` is imported here and nowhere else in the SDK (the generated stubs aside).
 */

import * as grpc from "@grpc/grpc-js";

import { Cancelled, Internal, LatchkeyError, statusCodeName } from "./errors.js";
import { Backoff, isRetryable, sleep } from "./retry.js";
import type { ClientSettings } from "./settings.js";

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

/** Channels to one or more gateways; the active one changes when a call finds it down. */
export class Transport {
  private readonly clients = new Map<number, grpc.Client>();
  private active = 0;
  private closed = false;

  constructor(
    readonly settings: ClientSettings,
    private readonly backoff = new Backoff(),
  ) {}

  /** The gateway address currently in use. */
  get address(): string {
    return this.settings.endpoints[this.active]!.target;
  }

  private client(index: number): grpc.Client {
    let client = this.clients.get(index);
    if (client === undefined) {
      if (this.closed) throw new Cancelled("the client is closed");
      const endpoint = this.settings.endpoints[index]!;
      const { cacert, clientKey, clientCert } = this.settings;
      const credentials = endpoint.tls
        ? grpc.credentials.createSsl(cacert ?? null, clientKey ?? null, clientCert ?? null)
        : grpc.credentials.createInsecure();
      client = new grpc.Client(endpoint.target, credentials, CHANNEL_OPTIONS);
      this.clients.set(index, client);
    }
    return client;
  }

  private metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.settings.token) metadata.set("authorization", `Bearer ${this.settings.token}`);
    return metadata;
  }

  /** Move to the next gateway when the one that failed is still the active one. */
  failover(failed: number): void {
    const count = this.settings.endpoints.length;
    if (this.active === failed && count > 1) this.active = (failed + 1) % count;
  }

  private attempt<Req, Res>(
    index: number,
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
      const call = this.client(index).makeUnaryRequest(
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
      const index = this.active;
      let error: LatchkeyError;
      try {
        return await this.attempt(index, method, request, options);
      } catch (err) {
        error = translate(err);
      }
      if (signal?.aborted || !isRetryable(error)) throw error;
      this.failover(index);
      const wait = this.backoff.delayMs(attempt, error.retryAfterMs);
      if (performance.now() + wait > deadline) throw error;
      if (!(await sleep(wait, signal))) throw aborted(signal!);
    }
  }

  /** Open a server stream on the active gateway; returns it with the gateway's index. */
  stream<Req, Res>(method: StreamMethod<Req, Res>, request: Req): { stream: Stream<Res>; index: number } {
    const index = this.active;
    const call = this.client(index).makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      this.metadata(),
      {},
    );
    return { stream: new Stream(call), index };
  }

  /** Close every channel; calls in flight end with `Cancelled`. */
  close(): void {
    this.closed = true;
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}
