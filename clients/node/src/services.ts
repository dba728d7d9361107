/** Healthy service instances from Consul: `client.services`. */

import { randomInt } from "node:crypto";

import * as convert from "./convert.js";
import { NoHealthyInstances } from "./errors.js";
import * as pb from "./gen/latchkey/v1/discovery.js";
import type { HealthStatus, Instance, RegistrationHealth, ServiceEvent, StreamStatus } from "./models.js";
import type { CallOptions, Transport } from "./transport.js";
import { RegistrationView, ServiceView } from "./views.js";
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

/** What `services.register` registers. Durations are Consul's: "10s", "1m30s", "500ms". */
export interface RegisterOptions {
  /** The port other services dial (1-65535). */
  port: number;
  /** The instance id; by default the gateway makes one (`<service>-<random>`). */
  instanceId?: string | undefined;
  /** The address other services dial; by default the address the gateway sees the client at. */
  address?: string | undefined;
  tags?: readonly string[] | undefined;
  meta?: Readonly<Record<string, string>> | undefined;
  /** An HTTP(S) URL Consul checks (2xx passing, 429 warning, else critical). */
  httpCheck?: string | undefined;
  /** host:port that must accept a TCP connection. */
  tcpCheck?: string | undefined;
  /** host:port[/service] answering grpc.health.v1.Health. */
  grpcCheck?: string | undefined;
  /** How often Consul runs the checks (default "10s"). */
  interval?: string | undefined;
  /** How long one check run may take (default "5s"). */
  timeout?: string | undefined;
  /** Consul drops the instance after its checks have been critical this long (default "1m"). */
  deregisterAfter?: string | undefined;
  /** Add a check the gateway keeps passing while the registration is open (the only check
   * when none is named). */
  ttl?: boolean | undefined;
  /** Closes the registration when it aborts (before it is confirmed: the call rejects with
   * `Cancelled`). */
  signal?: AbortSignal | undefined;
}

/**
 * An instance of a service registered in Consul while this object is open; `close()` (or
 * `await using`) ends the stream and the gateway deregisters it. If the gateway goes away the
 * stream reconnects (to another gateway when several are configured) and the same `instanceId`
 * is registered again.
 *
 * Events: `change` (a `RegistrationHealth` whenever a check's status changes), `status` and
 * `stale` / `fresh` / `unreachable` / `reconnect` (a `StreamStatus`), `error`, `close`.
 */
export interface Registration {
  on(event: "change", listener: (health: RegistrationHealth) => void): this;
  on(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  on(event: "error", listener: (error: Error) => void): this;
  on(event: "close", listener: () => void): this;
  once(event: "change", listener: (health: RegistrationHealth) => void): this;
  once(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  once(event: "error", listener: (error: Error) => void): this;
  once(event: "close", listener: () => void): this;
}

export class Registration extends LiveStream<RegistrationHealth> {
  protected readonly loop: StreamLoop<pb.RegisterEvent>;
  private readonly view: RegistrationView;

  /** @internal */
  constructor(
    transport: Transport,
    readonly service: string,
    request: pb.RegisterRequest,
  ) {
    super(`registration of ${service}`);
    this.view = new RegistrationView(request.id);
    this.loop = new StreamLoop<pb.RegisterEvent>({
      name: this.name,
      // After a reconnect: the id the gateway gave the instance, so it is the same instance again.
      open: (signal) =>
        transport.stream(pb.DiscoveryService.register, { ...request, id: this.view.instanceId }, signal),
      onMessage: (message) => {
        for (const item of this.view.apply(message)) {
          if ("checks" in item) this.publish(item, "change");
          else this.publishStatus(item);
        }
      },
      onStatus: (status) => this.publishStatus(status),
      onError: (error) => this.reportError(error),
      failover: (gateway) => transport.failover(gateway),
      address: () => transport.address,
    });
  }

  /** The Consul service id of the instance. */
  get instanceId(): string {
    return this.view.instanceId;
  }

  /** The worst status among the instance's checks; `unknown` until Consul said. */
  get status(): HealthStatus {
    return this.view.health?.status ?? "unknown";
  }

  /** The instance's checks as Consul last reported them. */
  get health(): RegistrationHealth | null {
    return this.view.health;
  }

  protected initial(): RegistrationHealth | null {
    return this.view.health;
  }
}

/** `client.services`: healthy instances, live watches and load-balanced picks. */
export class Services {
  private readonly open = new Set<ServiceWatch | Registration>();
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

  /**
   * Register an instance of `name` in Consul for as long as the returned handle is open:
   * `await using reg = await client.services.register("myapp", { port: 3000, ttl: true })`.
   * Resolves once the gateway confirmed the registration (`reg.instanceId`); rejects with why it
   * could not (`InvalidArgument`, `PermissionDenied`: the `register` capability on the service).
   * Checks: `httpCheck`, `tcpCheck`, `grpcCheck`, run every `interval`; `ttl: true` adds one the
   * gateway keeps passing while the stream is open.
   */
  async register(name: string, options: RegisterOptions): Promise<Registration> {
    const { port } = options;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new TypeError(`register ${JSON.stringify(name)}: port must be a whole number from 1 to 65535, not ${port}`);
    }
    const request = convert.registerRequest(name, { ...options, id: options.instanceId ?? "" });
    const registration = new Registration(this.transport, name, request);
    this.open.add(registration);
    registration.once("close", () => this.open.delete(registration));
    try {
      return await registration.start(options.signal);
    } catch (error) {
      await registration.close();
      throw error;
    }
  }

  /** @internal Close every watch (including those behind `pick`) and registration. */
  async closeAll(): Promise<void> {
    const watches = [...this.open];
    this.open.clear();
    this.live.clear();
    await Promise.all(watches.map((w) => w.close()));
  }
}
