/** Healthy service instances from Consul: `client.services`. */

import { randomInt } from "node:crypto";

import * as convert from "./convert.js";
import { NoHealthyInstances } from "./errors.js";
import * as pb from "./gen/latchkey/v1/discovery.js";
import type { Instance, ServiceEvent, StreamStatus } from "./models.js";
import type { CallOptions, Transport } from "./transport.js";
import { ServiceView } from "./views.js";
import { LiveStream, type StatusEventName, StreamLoop } from "./watch.js";

/** Which instances a call is about. */
export interface ServiceQuery {
  /** Only instances carrying this tag. */
  tag?: string | undefined;
}

/** How `pick` chooses: at random (the default) or in turn. */
export type PickStrategy = "random" | "round-robin";

/**
 * The live instance set of a service. `current` always holds it.
 *
 * Events: `change` (a `ServiceEvent` with the complete set), `status` and `stale` / `fresh` /
 * `unreachable` / `reconnect` (a `StreamStatus`), `error`, `close`.
 */
export interface ServiceWatch {
  on(event: "change", listener: (event: ServiceEvent) => void): this;
  on(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  on(event: "error", listener: (error: Error) => void): this;
  on(event: "close", listener: () => void): this;
  once(event: "change", listener: (event: ServiceEvent) => void): this;
  once(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  once(event: "error", listener: (error: Error) => void): this;
  once(event: "close", listener: () => void): this;
}

export class ServiceWatch extends LiveStream<ServiceEvent> {
  protected readonly loop: StreamLoop<pb.ServiceEvent>;
  private readonly view: ServiceView;

  /** @internal */
  constructor(
    transport: Transport,
    readonly service: string,
    query: ServiceQuery,
  ) {
    super(`service watch ${service}`);
    this.view = new ServiceView(service);
    this.loop = new StreamLoop<pb.ServiceEvent>({
      name: this.name,
      open: (signal) =>
        transport.stream(
          pb.DiscoveryService.watch,
          pb.WatchServiceRequest.fromPartial({ service, tag: query.tag ?? "" }),
          signal,
        ),
      onMessage: (message) => {
        for (const item of this.view.apply(message)) {
          if ("instances" in item) this.publish(item, "change");
          else this.publishStatus(item);
        }
      },
      onStatus: (status) => this.publishStatus(status),
      onError: (error) => this.reportError(error),
      failover: (gateway) => transport.failover(gateway),
      address: () => transport.address,
    });
  }

  /** The instance set after the last event (set once `watch()` has resolved). */
  get current(): ServiceEvent {
    return this.view.current!;
  }

  /** The instances now. */
  get instances(): readonly Instance[] {
    return this.view.current?.instances ?? [];
  }

  protected initial(): ServiceEvent | null {
    return this.view.current;
  }

}

/** `client.services`: healthy instances, live watches and load-balanced picks. */
export class Services {
  private readonly open = new Set<ServiceWatch>();
  private readonly live = new Map<string, Promise<ServiceWatch>>();
  private readonly turns = new Map<string, number>();

  /** @internal */
  constructor(private readonly transport: Transport) {}

  /** The instances of `name` (carrying `tag`, when given) whose checks all pass. */
  async healthy(name: string, options: ServiceQuery & CallOptions = {}): Promise<Instance[]> {
    const resp = await this.transport.unary(
      pb.DiscoveryService.getHealthyInstances,
      pb.GetHealthyInstancesRequest.fromPartial({ service: name, tag: options.tag ?? "" }),
      options,
    );
    return resp.instances.map(convert.instance);
  }

  /**
   * Watch the healthy instances of `name`. Resolves once the first instance set arrived
   * (`watch.current`); the stream reconnects on its own. Close it with `close()`.
   */
  async watch(name: string, options: ServiceQuery & { signal?: AbortSignal | undefined } = {}): Promise<ServiceWatch> {
    const watch = new ServiceWatch(this.transport, name, options);
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
   * One passing instance of `name`, chosen at `random` (default) or `round-robin` from the live
   * set, which a watch started on first use keeps current (until the client closes). Rejects
   * with `NoHealthyInstances` when none passes.
   */
  async pick(name: string, options: ServiceQuery & { strategy?: PickStrategy } = {}): Promise<Instance> {
    const key = `${name}\u0000${options.tag ?? ""}`;
    let live = this.live.get(key);
    if (live === undefined) {
      live = this.watch(name, { tag: options.tag });
      this.live.set(key, live);
      live.then(
        (watch) => watch.once("close", () => this.live.delete(key)),
        () => this.live.delete(key),
      );
    }
    const watch = await live;
    const passing = [...watch.instances].filter((i) => i.health === "passing").sort((a, b) => (a.id < b.id ? -1 : 1));
    if (passing.length === 0) throw new NoHealthyInstances(`no healthy instance of service ${JSON.stringify(name)}`);
    const strategy = options.strategy ?? "random";
    if (strategy === "random") return passing[randomInt(passing.length)]!;
    if (strategy !== "round-robin") throw new TypeError(`unknown strategy ${JSON.stringify(strategy)}: use "random" or "round-robin"`);
    const turn = this.turns.get(key) ?? 0;
    this.turns.set(key, turn + 1);
    return passing[turn % passing.length]!;
  }

  /** @internal Close every watch, including those behind `pick`. */
  async closeAll(): Promise<void> {
    const watches = [...this.open];
    this.open.clear();
    this.live.clear();
    await Promise.all(watches.map((w) => w.close()));
  }
}
