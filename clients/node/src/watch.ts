/**
 * Streams that reconnect on their own: the loop behind every watch, the bounded queue behind
 * every async iterator, and `LiveStream`, the EventEmitter base of the watch handles.
 */

import { EventEmitter } from "node:events";

import { Cancelled, DeadlineExceeded, LatchkeyError, ResourceExhausted } from "./errors.js";
import type { StreamStatus } from "./models.js";
import { Backoff, isRetryable, sleep } from "./retry.js";
import type { Endpoint } from "./settings.js";
import { type Stream, translate } from "./transport.js";

/** How long `watch()` waits for the first event before it gives up. */
export const FIRST_EVENT_TIMEOUT_MS = 30_000;
/** How many events an async iterator may fall behind before it fails (memory stays bounded). */
export const ITERATOR_LIMIT = 1_024;

/** What a `StreamLoop` needs from its owner. */
export interface LoopHooks<M> {
  readonly name: string;
  /** Open the stream on the active gateway (resuming where the owner left off); `signal` aborts
   * the wait for a gateway (with `consul://`, Consul's first answer). */
  open(signal: AbortSignal): Promise<{ stream: Stream<M>; gateway: Endpoint }>;
  /** Handle one message; the next is read only after the returned promise settles. */
  onMessage(message: M): Promise<void> | void;
  onStatus(status: StreamStatus): void;
  /** A failure the application should hear about (the loop goes on). */
  onError(error: Error): void;
  /** Move to the next gateway after `gateway` failed. */
  failover(gateway: Endpoint): void;
  /** The gateway address now in use. */
  address(): string;
}

/**
 * Runs a server stream until closed, reopening it whenever it breaks (after a gateway restart,
 * or on another gateway when several are configured) with backoff. While the gateway cannot be
 * reached the owner gets `unreachable`, and `reconnected` once messages flow again.
 */
export class StreamLoop<M> {
  private stopped = false;
  private delivering = false;
  private ready = false;
  private stream: Stream<M> | null = null;
  private running: Promise<void> = Promise.resolve();
  private lastError: LatchkeyError | null = null;
  private readonly stop = new AbortController();
  private settleReady: ((error: LatchkeyError | null) => void) | null = null;

  constructor(
    private readonly hooks: LoopHooks<M>,
    private readonly backoff = new Backoff(100, 2_000),
    private readonly firstEventTimeoutMs = FIRST_EVENT_TIMEOUT_MS,
  ) {}

  get closed(): boolean {
    return this.stopped;
  }

  /** Start the loop; resolves after the first message was handled, rejects with the first
   * non-retryable error, with `Cancelled` when `signal` aborts, or after the first-event
   * timeout with the last error seen. */
  async start(signal?: AbortSignal): Promise<void> {
    const first = new Promise<LatchkeyError | null>((resolve) => {
      this.settleReady = resolve;
    });
    const timer = setTimeout(() => {
      const why =
        this.lastError ??
        new DeadlineExceeded(`watch ${this.hooks.name}: no first event within ${this.firstEventTimeoutMs / 1000}s`);
      this.markReady(why);
    }, this.firstEventTimeoutMs);
    const onAbort = (): void => this.markReady(new Cancelled("the watch was aborted", { cause: signal?.reason }));
    if (signal?.aborted) onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    this.running = this.run().catch((err: unknown) => this.hooks.onError(translate(err)));
    const error = await first;
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    if (error !== null) {
      await this.close();
      throw error;
    }
  }

  private markReady(error: LatchkeyError | null): void {
    const settle = this.settleReady;
    this.settleReady = null;
    if (error === null) this.ready = true;
    settle?.(error);
  }

  private async run(): Promise<void> {
    let attempt = 0;
    let down = false;
    while (!this.stopped) {
      let gateway: Endpoint | undefined;
      let error: LatchkeyError | null = null;
      try {
        const opened = await this.hooks.open(this.stop.signal);
        gateway = opened.gateway;
        this.stream = opened.stream;
        if (this.stopped) {
          opened.stream.cancel(); // closed while it opened
          return;
        }
        for await (const message of opened.stream) {
          if (this.stopped) return;
          if (down) {
            down = false;
            this.hooks.onStatus({ kind: "reconnected", detail: this.hooks.address(), freshness: null });
          }
          attempt = 0;
          await this.deliver(message);
          if (!this.ready) this.markReady(null);
        }
      } catch (err) {
        error = translate(err);
      }
      if (this.stopped) return;
      if (error !== null && !isRetryable(error)) {
        if (!this.ready) {
          this.markReady(error);
          return;
        }
        this.hooks.onError(error);
      }
      this.lastError = error;
      if (gateway !== undefined) this.hooks.failover(gateway);
      if (!down) {
        down = true;
        const detail = error !== null ? error.message : "the stream ended";
        this.hooks.onStatus({ kind: "unreachable", detail, freshness: null });
      }
      await sleep(this.backoff.delayMs(attempt, error?.retryAfterMs), this.stop.signal);
      attempt = Math.min(attempt + 1, 10);
    }
  }

  private async deliver(message: M): Promise<void> {
    this.delivering = true;
    try {
      await this.hooks.onMessage(message);
    } catch (err) {
      this.hooks.onError(err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.delivering = false;
    }
  }

  /** Stop the stream (idempotent). Called from inside a handler it does not wait for the loop
   * (the loop is waiting for that handler). */
  async close(): Promise<void> {
    if (!this.stopped) {
      this.stopped = true;
      this.stop.abort();
      this.stream?.cancel();
      this.markReady(new Cancelled(`watch ${this.hooks.name} was closed`));
    }
    if (!this.delivering) await this.running;
  }
}

/** A bounded queue read by one async iterator; it fails (never drops silently) when full. */
export class EventQueue<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: Error) => void } | null = null;
  private error: Error | null = null;
  private ended = false;

  constructor(
    private readonly detach: () => void,
    private readonly limit = ITERATOR_LIMIT,
  ) {}

  push(item: T): void {
    if (this.ended) return;
    if (this.waiter !== null) {
      const { resolve } = this.waiter;
      this.waiter = null;
      resolve({ value: item, done: false });
    } else if (this.items.length >= this.limit) {
      this.fail(
        new ResourceExhausted(
          `the iterator fell more than ${this.limit} events behind; read it faster or use the event listeners`,
        ),
      );
    } else {
      this.items.push(item);
    }
  }

  /** End the iteration with an error, after the events already queued. */
  fail(error: Error): void {
    if (this.ended) return;
    this.error = error;
    this.finish();
  }

  /** End the iteration, after the events already queued. */
  end(): void {
    this.finish();
  }

  private finish(): void {
    this.ended = true;
    this.detach();
    if (this.waiter !== null && this.items.length === 0) {
      const { resolve, reject } = this.waiter;
      this.waiter = null;
      if (this.error !== null) reject(this.error);
      else resolve({ value: undefined, done: true });
      this.error = null;
    }
  }

  next(): Promise<IteratorResult<T>> {
    if (this.items.length > 0) return Promise.resolve({ value: this.items.shift() as T, done: false });
    if (this.error !== null) {
      const error = this.error;
      this.error = null;
      return Promise.reject(error);
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.items.length = 0;
    this.error = null;
    this.finish();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}

/** Names of the events every stream emits with a `StreamStatus`, besides `status`. */
export type StatusEventName = "stale" | "fresh" | "unreachable" | "reconnect";

const STATUS_EVENT: Record<StreamStatus["kind"], StatusEventName> = {
  stale: "stale",
  fresh: "fresh",
  unreachable: "unreachable",
  reconnected: "reconnect",
};

/**
 * The base of every watch handle: an EventEmitter fed by a `StreamLoop`, readable as an async
 * iterator too, and closed with `close()` (or `await using`).
 *
 * Every handle emits `close` once closed, `status` with each `StreamStatus`, and the same object as `stale`, `fresh`,
 * `unreachable` or `reconnect`. `error` carries failures the application should hear about
 * (a listener that threw, a non-retryable stream error); without an `error` listener they become
 * process warnings instead of crashing the process.
 */
export abstract class LiveStream<T> extends EventEmitter {
  protected readonly iterators = new Set<EventQueue<T | StreamStatus>>();
  protected abstract readonly loop: StreamLoop<unknown>;

  constructor(readonly name: string) {
    super({ captureRejections: true });
  }

  /** True once closed. */
  get closed(): boolean {
    return this.loop.closed;
  }

  /** Emit to the listeners; one that throws is reported (`error`), never breaks the stream. */
  protected safeEmit(event: string, ...args: unknown[]): void {
    try {
      this.emit(event, ...args);
    } catch (err) {
      this.reportError(err instanceof Error ? err : new Error(String(err)));
    }
  }

  protected publish(event: T, emitAs: string): void {
    for (const queue of this.iterators) queue.push(event);
    this.safeEmit(emitAs, event);
  }

  protected publishStatus(status: StreamStatus): void {
    for (const queue of this.iterators) queue.push(status);
    this.safeEmit("status", status);
    this.safeEmit(STATUS_EVENT[status.kind], status);
  }

  protected reportError(error: Error): void {
    if (this.listenerCount("error") > 0) this.emit("error", error);
    else process.emitWarning(`latchkey ${this.name}: ${error.message}`, { code: "LATCHKEY_WATCH" });
  }

  /** An async listener that rejected (EventEmitter's captureRejections). */
  override [EventEmitter.captureRejectionSymbol](error: unknown): void {
    this.reportError(error instanceof Error ? error : new Error(String(error)));
  }

  /** @internal Start the stream; resolves once the first event was handled. An abort of
   * `signal` closes the watch (before the first event: `start` rejects with `Cancelled`). */
  async start(signal?: AbortSignal): Promise<this> {
    await this.loop.start(signal);
    if (signal !== undefined) {
      const onAbort = (): void => void this.close();
      signal.addEventListener("abort", onAbort, { once: true });
      this.once("close", () => signal.removeEventListener("abort", onAbort)); // long-lived signals
      if (signal.aborted) onAbort();
    }
    return this;
  }

  /** The first item an iterator yields: the state the watch holds now. */
  protected abstract initial(): T | null;

  /** Events as they come (data events and `StreamStatus`), starting with the current state.
   * The iteration ends when the watch closes; it fails if it falls too far behind. */
  [Symbol.asyncIterator](): AsyncIterableIterator<T | StreamStatus> {
    const queue: EventQueue<T | StreamStatus> = new EventQueue(() => this.iterators.delete(queue));
    const first = this.initial();
    if (first !== null) queue.push(first);
    if (this.closed) queue.end();
    else this.iterators.add(queue);
    return queue;
  }

  /** Stop watching (idempotent); iterators end, and `close` is emitted once. */
  async close(): Promise<void> {
    const first = !this.loop.closed;
    await this.loop.close();
    for (const queue of [...this.iterators]) queue.end();
    if (first) this.safeEmit("close");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
