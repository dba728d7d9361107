/** Secrets, rotating database credentials and leases: `client.secrets`, `client.database`,
 * `client.leases`. */

import * as convert from "./convert.js";
import { LatchkeyError } from "./errors.js";
import * as pb from "./gen/latchkey/v1/secrets.js";
import { type DatabaseCredentials, type LeaseInfo, type RenewedLease, Secret, type StreamStatus } from "./models.js";
import type { CallOptions, Transport } from "./transport.js";
import { CredentialView, type Rotation, SecretView } from "./views.js";
import { LiveStream, type StatusEventName, StreamLoop } from "./watch.js";

/**
 * A KV v2 secret kept current: `current` always holds its latest version.
 *
 * The gateway polls the secret's version (`vault.kv_watch_interval`, 15 s by default) and pushes
 * each new version; this object switches `current` to it and emits `change`. While Vault cannot
 * be read `current` keeps the last version and the watch emits `stale` (then `fresh`). After a
 * reconnect it carries on; a version it already has is not reported again. `close()` ends the
 * stream.
 *
 * Events: `change` (the new version and the previous one), `status` and `stale` / `fresh` /
 * `unreachable` / `reconnect` (a `StreamStatus`), `error`, `close`.
 */
export interface WatchedSecret {
  on(event: "change", listener: (secret: Secret, previous: Secret) => void): this;
  on(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  on(event: "error", listener: (error: Error) => void): this;
  on(event: "close", listener: () => void): this;
  once(event: "change", listener: (secret: Secret, previous: Secret) => void): this;
  once(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  once(event: "error", listener: (error: Error) => void): this;
  once(event: "close", listener: () => void): this;
}

export class WatchedSecret extends LiveStream<Secret> {
  protected readonly loop: StreamLoop<pb.SecretEvent>;
  private readonly view = new SecretView();
  /** How many times the version changed since the watch started. */
  changes = 0;

  /** @internal */
  constructor(
    transport: Transport,
    readonly path: string,
    readonly mount: string,
  ) {
    super(`secret watch ${mount}/${path}`);
    this.loop = new StreamLoop<pb.SecretEvent>({
      name: this.name,
      open: (signal) =>
        transport.stream(pb.SecretsService.watchSecret, pb.WatchSecretRequest.fromPartial({ path, mount }), signal),
      onMessage: (message) => this.onMessage(message),
      onStatus: (status) => this.publishStatus(status),
      onError: (error) => this.reportError(error),
      failover: (gateway) => transport.failover(gateway),
      address: () => transport.address,
    });
  }

  /** The secret's latest version (set once `watch()` has resolved). */
  get current(): Secret {
    if (this.view.current === null) throw new LatchkeyError("the secret watch has not started");
    return this.view.current;
  }

  protected initial(): Secret | null {
    return this.view.current;
  }

  private onMessage(message: pb.SecretEvent): void {
    const previous = this.view.current;
    for (const item of this.view.apply(message)) {
      if (!(item instanceof Secret)) this.publishStatus(item);
      else if (previous !== null) {
        this.changes += 1;
        for (const queue of this.iterators) queue.push(item);
        this.safeEmit("change", item, previous);
      }
    }
  }
}

/** `client.secrets`: static KV v2 secrets, read once or watched. */
export class Secrets {
  private readonly open = new Set<WatchedSecret>();

  /** @internal */
  constructor(private readonly transport: Transport) {}

  /**
   * A secret kept current across new versions (`watched.current`, `change` events). Resolves
   * once the first version arrived; rejects with `NotFound` when the secret does not exist. The
   * stream reconnects on its own. Close it (or the client) to stop watching.
   */
  async watch(
    path: string,
    options: { mount?: string | undefined; signal?: AbortSignal | undefined } = {},
  ): Promise<WatchedSecret> {
    const watched = new WatchedSecret(this.transport, path, options.mount ?? "secret");
    this.open.add(watched);
    watched.once("close", () => this.open.delete(watched));
    try {
      return await watched.start(options.signal);
    } catch (error) {
      await watched.close();
      throw error;
    }
  }

  /** @internal Close every secret watch. */
  async closeAll(): Promise<void> {
    const all = [...this.open];
    this.open.clear();
    await Promise.all(all.map((w) => w.close()));
  }

  /** Read a KV v2 secret (the latest version unless `version` is given). Rejects with
   * `NotFound` when it does not exist. */
  async get(path: string, options: { mount?: string; version?: number } & CallOptions = {}): Promise<Secret> {
    const request = pb.GetSecretRequest.fromPartial({
      path,
      mount: options.mount ?? "secret",
      version: options.version ?? 0,
    });
    return convert.secret(await this.transport.unary(pb.SecretsService.getSecret, request, options));
  }
}

/** A listener of `rotate`: it may return a promise; the rotation is acknowledged once every
 * listener has settled. */
export type RotateListener = (credentials: DatabaseCredentials, previous: DatabaseCredentials | null) => unknown;

/**
 * A database credential that stays valid: `current` always holds the one to use.
 *
 * The gateway renews the lease and, before it can no longer be renewed, rotates it. This object
 * switches `current` to the new credential, runs the `rotate` listeners one after another,
 * awaiting those that return a promise (they may take their time, e.g. to retire pooled
 * connections), and only then acknowledges the rotation, so that the gateway revokes the old
 * lease. After a reconnect it re-attaches to the same lease (a different one, if the old is
 * gone, is delivered as a rotation). `close()` releases the lease.
 *
 * Events: `rotate` (new and previous credential), `ack` (the rotation was acknowledged: the new
 * credential and the previous lease id, which the gateway now revokes), `renew` (the credential
 * with its new expiry),
 * `revoke` (lease id, reason), `status` and `stale` / `fresh` / `unreachable` / `reconnect`,
 * `error` (a listener that threw, a failed acknowledgement), `close`.
 */
export interface RotatingCredentials {
  on(event: "rotate", listener: RotateListener): this;
  on(event: "ack", listener: (credentials: DatabaseCredentials, previousLeaseId: string) => void): this;
  on(event: "renew", listener: (credentials: DatabaseCredentials) => void): this;
  on(event: "revoke", listener: (leaseId: string, reason: string) => void): this;
  on(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  on(event: "error", listener: (error: Error) => void): this;
  on(event: "close", listener: () => void): this;
  once(event: "rotate", listener: RotateListener): this;
  once(event: "ack", listener: (credentials: DatabaseCredentials, previousLeaseId: string) => void): this;
  once(event: "renew", listener: (credentials: DatabaseCredentials) => void): this;
  once(event: "revoke", listener: (leaseId: string, reason: string) => void): this;
  once(event: "status" | StatusEventName, listener: (status: StreamStatus) => void): this;
  once(event: "error", listener: (error: Error) => void): this;
  once(event: "close", listener: () => void): this;
}

export class RotatingCredentials extends LiveStream<DatabaseCredentials> {
  protected readonly loop: StreamLoop<pb.CredentialEvent>;
  private readonly view: CredentialView;
  /** How many times the credential changed since the watch started. */
  rotations = 0;

  /** @internal */
  constructor(
    private readonly transport: Transport,
    readonly role: string,
  ) {
    super(`credential watch ${role}`);
    this.view = new CredentialView(role);
    this.loop = new StreamLoop<pb.CredentialEvent>({
      name: this.name,
      open: (signal) =>
        transport.stream(
          pb.SecretsService.watchDatabaseCredentials,
          pb.WatchDatabaseCredentialsRequest.fromPartial({ role, leaseId: this.view.leaseId }),
          signal,
        ),
      onMessage: (message) => this.onMessage(message),
      onStatus: (status) => this.publishStatus(status),
      onError: (error) => this.reportError(error),
      failover: (gateway) => transport.failover(gateway),
      address: () => transport.address,
    });
  }

  /** The credential to connect with now. */
  get current(): DatabaseCredentials {
    if (this.view.current === null) throw new LatchkeyError("the credential watch has not started");
    return this.view.current;
  }

  protected initial(): DatabaseCredentials | null {
    return this.view.current;
  }

  private async onMessage(message: pb.CredentialEvent): Promise<void> {
    const update = this.view.apply(message);
    switch (update?.kind) {
      case "rotation":
        await this.rotated(update.credentials, update.previous);
        await this.acknowledge(update);
        break;
      case "issued":
        // A different lease after a reconnect: the old one was gone (no acknowledgement needed).
        if (update.previous !== null && update.previous.leaseId !== update.credentials.leaseId) {
          await this.rotated(update.credentials, update.previous);
        }
        break;
      case "renewed":
        this.safeEmit("renew", update.credentials);
        break;
      case "revoked":
        this.safeEmit("revoke", update.leaseId, update.reason);
        if (update.status !== null) this.publishStatus(update.status);
        break;
      case "status":
        this.publishStatus(update.status);
        break;
    }
  }

  /** Run the `rotate` listeners in order, awaiting each; one that fails is reported. */
  private async rotated(credentials: DatabaseCredentials, previous: DatabaseCredentials | null): Promise<void> {
    this.rotations += 1;
    for (const queue of this.iterators) queue.push(credentials);
    for (const listener of this.rawListeners("rotate")) {
      try {
        await (listener as RotateListener).call(this, credentials, previous);
      } catch (error) {
        this.reportError(error instanceof Error ? error : new Error(String(error)));
      }
    }
  }

  private async acknowledge(rotation: Rotation): Promise<void> {
    try {
      await this.transport.unary(
        pb.SecretsService.ackRotation,
        pb.AckRotationRequest.fromPartial({ watchId: rotation.watchId, rotationId: rotation.rotationId }),
      );
      this.safeEmit("ack", rotation.credentials, rotation.previousLeaseId);
    } catch (error) {
      // The gateway revokes the old lease at the grace deadline anyway.
      const reason = error instanceof Error ? error.message : String(error);
      this.reportError(new LatchkeyError(`acknowledging the rotation of role ${this.role} failed: ${reason}`, { cause: error }));
    }
  }

}

/** `client.database`: dynamic database credentials. */
export class Database {
  private readonly open = new Set<RotatingCredentials>();

  /** @internal */
  constructor(private readonly transport: Transport) {}

  /** A one-shot credential for `role`; the caller holds its lease until it revokes it or lets
   * it lapse (prefer `watch`, which renews and rotates). */
  async credentials(role: string, options?: CallOptions): Promise<DatabaseCredentials> {
    const resp = await this.transport.unary(
      pb.SecretsService.getDatabaseCredentials,
      pb.GetDatabaseCredentialsRequest.fromPartial({ role }),
      options,
    );
    return convert.credentials(resp.credential);
  }

  /** A credential for `role` that the gateway renews and rotates; resolves once the first
   * credential arrived (`creds.current`). `close()` releases the lease. */
  async watch(role: string, options: { signal?: AbortSignal | undefined } = {}): Promise<RotatingCredentials> {
    const creds = new RotatingCredentials(this.transport, role);
    this.open.add(creds);
    creds.once("close", () => this.open.delete(creds));
    try {
      return await creds.start(options.signal);
    } catch (error) {
      await creds.close();
      throw error;
    }
  }

  /** @internal Close every credential watch (releasing their leases). */
  async closeAll(): Promise<void> {
    const all = [...this.open];
    this.open.clear();
    await Promise.all(all.map((c) => c.close()));
  }
}

/** `client.leases`: the leases the gateway holds (renew, revoke, list; for operators). */
export class Leases {
  /** @internal */
  constructor(private readonly transport: Transport) {}

  async list(options: { role?: string } & CallOptions = {}): Promise<LeaseInfo[]> {
    const resp = await this.transport.unary(
      pb.SecretsService.listLeases,
      pb.ListLeasesRequest.fromPartial({ role: options.role ?? "" }),
      options,
    );
    return resp.leases.map(convert.leaseInfo);
  }

  /** Renew a lease (by `incrementMs`, else the role's default TTL). */
  async renew(leaseId: string, options: { incrementMs?: number } & CallOptions = {}): Promise<RenewedLease> {
    const request = pb.RenewLeaseRequest.fromPartial({
      leaseId,
      increment: options.incrementMs === undefined ? undefined : convert.duration(options.incrementMs),
    });
    return convert.renewed(await this.transport.unary(pb.SecretsService.renewLease, request, options));
  }

  /** Release the caller's hold (`force`: revoke in Vault now). Resolves true when revoked. */
  async revoke(leaseId: string, options: { force?: boolean } & CallOptions = {}): Promise<boolean> {
    const resp = await this.transport.unary(
      pb.SecretsService.revokeLease,
      pb.RevokeLeaseRequest.fromPartial({ leaseId, force: options.force ?? false }),
      options,
    );
    return resp.revoked;
  }
}
