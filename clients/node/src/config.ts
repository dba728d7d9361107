/** Live configuration from Consul KV: `client.config`. */

import { EventEmitter } from "node:events";

import * as convert from "./convert.js";
import * as pb from "./gen/latchkey/v1/config.js";
import type { ConfigEntry, ConfigEvent, StreamStatus } from "./models.js";
import type { CallOptions, Transport } from "./transport.js";
import { ConfigView, fieldValues, mergeLayers, nest } from "./views.js";
import { LiveStream, type StatusEventName, StreamLoop } from "./watch.js";

/** Options of `config.watch` and `config.bind`. */
export interface WatchOptions {
  /** Closes the watch when it aborts (before the first event: the call rejects with `Cancelled`). */
  signal?: AbortSignal | undefined;
}

/**
 * A live view of the keys under a prefix. `current` always holds the full state.
 *
 * Events: `change` (a `ConfigEvent`: a snapshot or a change, with every entry after it),
 * `status` and `stale` / `fresh` / `unreachable` / `reconnect` (a `StreamStatus`), `error`.
 * After a reconnect the stream resumes from the last index it saw, so no update is lost.
 */
export interface ConfigWatch {
  on(event: "change", listener: (event: ConfigEvent) => void): this;
  on(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  on(event: "error", listener: (error: Error) => void): this;
  once(event: "change", listener: (event: ConfigEvent) => void): this;
  once(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  once(event: "error", listener: (error: Error) => void): this;
  on(event: "close", listener: () => void): this;
  once(event: "close", listener: () => void): this;
}

export class ConfigWatch extends LiveStream<ConfigEvent> {
  protected readonly loop: StreamLoop<pb.ConfigEvent>;
  private readonly view = new ConfigView();

  constructor(
    transport: Transport,
    readonly prefix: string,
  ) {
    super(`config watch ${prefix}`);
    this.loop = new StreamLoop<pb.ConfigEvent>({
      name: this.name,
      open: (signal) =>
        transport.stream(
          pb.ConfigService.watch,
          pb.WatchConfigRequest.fromPartial({
            prefix,
            resumeIndex: this.view.resumeIndex,
            resumeEpoch: this.view.resumeEpoch,
          }),
          signal,
        ),
      onMessage: (message) => {
        for (const item of this.view.apply(message)) {
          if ("entries" in item) this.publish(item, "change");
          else this.publishStatus(item);
        }
      },
      onStatus: (status) => this.publishStatus(status),
      onError: (error) => this.reportError(error),
      failover: (gateway) => transport.failover(gateway),
      address: () => transport.address,
    });
  }

  /** The state after the last event (set once `watch()` has resolved). */
  get current(): ConfigEvent {
    return this.view.current!;
  }

  /** Every key under the prefix now. */
  get entries(): Readonly<Record<string, ConfigEntry>> {
    return this.view.entries;
  }

  protected initial(): ConfigEvent | null {
    return this.view.current;
  }

}

/** Checks and converts the raw values of a binding: a function that returns the typed value or
 * throws, or any schema with a `parse` method (a zod schema, for instance). */
export type Validator<T> = ((raw: Record<string, unknown>) => T) | { parse(raw: unknown): T };

function checkValidator(validator: unknown): void {
  const ok =
    typeof validator === "function" ||
    (typeof validator === "object" && validator !== null && typeof (validator as { parse?: unknown }).parse === "function");
  if (!ok) throw new TypeError("bind needs a validator: a function that returns the value or throws, or a schema with parse (zod)");
}

function validate<T>(validator: Validator<T>, raw: Record<string, unknown>): T {
  return typeof validator === "function" ? validator(raw) : validator.parse(raw);
}

/** The fields a schema declares, when it says (a zod object's `shape`): a flat field such as
 * `database__host` then takes the key `database/host` whole instead of nesting it. */
function declaredFields(validator: Validator<unknown>): Set<string> {
  const shape = (validator as { shape?: unknown }).shape;
  return new Set(typeof shape === "object" && shape !== null ? Object.keys(shape) : []);
}

/**
 * A typed value that follows the keys under one or more prefixes. `value` is always the last
 * value that passed validation; an update that fails keeps it and is reported as `error`.
 *
 * Events: `update` (the new value and the previous one), `error` (a validation failure; without
 * a listener it becomes a process warning), and the watches' `status` events (one per prefix
 * watched).
 */
export interface Binding<T> {
  on(event: "update", listener: (value: T, previous: T) => void): this;
  on(event: "error", listener: (error: unknown) => void): this;
  on(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  once(event: "update", listener: (value: T, previous: T) => void): this;
  once(event: "error", listener: (error: unknown) => void): this;
  once(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
}

export class Binding<T> extends EventEmitter {
  /** The prefixes followed, comma-separated (one for the single-prefix form). */
  readonly prefix: string;
  private last: T;

  /** @internal */
  constructor(
    /** The prefixes followed, later ones overriding earlier ones. */
    readonly prefixes: readonly string[],
    private readonly watches: readonly ConfigWatch[],
    private readonly values: () => Record<string, unknown>,
    private readonly validator: Validator<T>,
    first: T,
  ) {
    super();
    this.prefix = prefixes.join(", ");
    this.last = first;
    for (const watch of watches) {
      watch.on("change", () => this.update());
      for (const name of ["status", "stale", "fresh", "unreachable", "reconnect"] as const) {
        watch.on(name, (status) => this.emit(name, status));
      }
      watch.on("error", (error) => this.report(error));
    }
  }

  /** The last valid value. */
  get value(): T {
    return this.last;
  }

  private update(): void {
    let next: T;
    try {
      next = validate(this.validator, this.values());
    } catch (error) {
      this.report(error);
      return;
    }
    const previous = this.last;
    this.last = next;
    this.emit("update", next, previous);
  }

  private report(error: unknown): void {
    if (this.listenerCount("error") > 0) this.emit("error", error);
    else
      process.emitWarning(`latchkey binding ${this.prefix}: an update failed validation; keeping the last good value`, {
        code: "LATCHKEY_BIND",
      });
  }

  /** Stop following the keys. */
  async close(): Promise<void> {
    await Promise.all(this.watches.map((w) => w.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** `client.config`: read, list, watch and bind Consul KV keys. */
export class Config {
  private readonly open = new Set<ConfigWatch>();

  /** @internal */
  constructor(private readonly transport: Transport) {}

  /** One key. Rejects with `NotFound` when it does not exist. */
  async get(key: string, options?: CallOptions): Promise<ConfigEntry> {
    const resp = await this.transport.unary(pb.ConfigService.get, pb.GetConfigRequest.fromPartial({ key }), options);
    if (resp.entry === undefined) throw new TypeError(`the gateway sent no entry for ${key}`);
    return convert.configEntry(resp.entry);
  }

  /** Every key under `prefix` (possibly none). */
  async list(prefix: string, options?: CallOptions): Promise<ConfigEntry[]> {
    const resp = await this.transport.unary(
      pb.ConfigService.list,
      pb.ListConfigRequest.fromPartial({ prefix }),
      options,
    );
    return resp.entries.map(convert.configEntry);
  }

  /**
   * Watch every key under `prefix`. Resolves once the first snapshot arrived (`watch.current`);
   * rejects with the first error (`PermissionDenied`, ...) if the stream cannot start. The
   * stream reconnects on its own and resumes from the last index. Close it with `close()`.
   */
  async watch(prefix: string, options: WatchOptions = {}): Promise<ConfigWatch> {
    const watch = new ConfigWatch(this.transport, prefix);
    this.open.add(watch);
    watch.once("close", () => this.open.delete(watch));
    try {
      return await watch.start(options.signal);
    } catch (error) {
      await watch.close();
      throw error;
    }
  }

  /**
   * A typed value that follows the keys under one or more prefixes (layers):
   * `bind(Settings, "config/myapp/", "config/myapp/env/production/")`. Later prefixes override
   * earlier ones key by key, and every prefix is watched. Key paths nest: below its prefix
   * `database/host` becomes `{ database: { host } }` (`-` read as `_`; a flat field a zod object
   * declares, `database__host`, takes the path whole). Values are decoded as JSON when they
   * parse, else used as text. A trailing `{ signal }` closes the binding when it aborts.
   *
   * `bind(prefix, validator, options?)`, the single-prefix form, maps paths flat instead:
   * `<prefix>/pool_size` → `pool_size`, `database/host` → `database__host`.
   *
   * The first value must validate (else the call rejects with the validator's error); later
   * invalid updates keep the last good value and emit `error`.
   */
  bind<T>(prefix: string, validator: Validator<T>, options?: WatchOptions): Promise<Binding<T>>;
  bind<T>(validator: Validator<T>, ...prefixes: [string, ...string[]]): Promise<Binding<T>>;
  bind<T>(validator: Validator<T>, ...prefixesThenOptions: [string, ...string[], WatchOptions]): Promise<Binding<T>>;
  async bind<T>(first: string | Validator<T>, ...rest: unknown[]): Promise<Binding<T>> {
    if (typeof first === "string") {
      const [validator, options] = rest as [Validator<T>, WatchOptions | undefined];
      checkValidator(validator);
      const prefix = first;
      return this.layered([prefix], validator, options ?? {}, (watches) => fieldValues(prefix, watches[0]!.entries));
    }
    checkValidator(first);
    const options = typeof rest[rest.length - 1] === "object" && rest.length > 0 ? (rest.pop() as WatchOptions) : {};
    if (rest.length === 0 || !rest.every((p) => typeof p === "string")) {
      throw new TypeError(
        'bind takes a validator and one or more prefixes: bind(Settings, "config/myapp/", "config/myapp/env/production/")',
      );
    }
    const prefixes = rest as string[];
    const declared = declaredFields(first);
    return this.layered(prefixes, first, options, (watches) =>
      nest(
        mergeLayers(watches.map((w) => ({ prefix: w.prefix, entries: w.entries }))),
        declared,
      ),
    );
  }

  private async layered<T>(
    prefixes: readonly string[],
    validator: Validator<T>,
    options: WatchOptions,
    values: (watches: readonly ConfigWatch[]) => Record<string, unknown>,
  ): Promise<Binding<T>> {
    const started = await Promise.allSettled(prefixes.map((p) => this.watch(p, options)));
    const watches = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    try {
      const failed = started.find((r) => r.status === "rejected");
      if (failed !== undefined) throw failed.reason;
      const first = validate(validator, values(watches));
      return new Binding(prefixes, watches, () => values(watches), validator, first);
    } catch (error) {
      await Promise.all(watches.map((w) => w.close()));
      throw error;
    }
  }

  /** @internal Close every watch and binding. */
  async closeAll(): Promise<void> {
    const watches = [...this.open];
    this.open.clear();
    await Promise.all(watches.map((w) => w.close()));
  }
}
