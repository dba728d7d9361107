/** Secrets, rotating database credentials and leases: `client.secrets`, `client.database`,
 * `client.leases`. */

import * as convert from "./convert.js";
import { LatchkeyError } from "./errors.js";
import * as pb from "./gen/latchkey/v1/secrets.js";
import type { DatabaseCredentials, LeaseInfo, RenewedLease, Secret, StreamStatus } from "./models.js";
import type { CallOptions, Transport } from "./transport.js";
import { CredentialView, type Rotation } from "./views.js";
import { LiveStream, type StatusEventName, StreamLoop } from "./watch.js";

/** `client.secrets`: static KV v2 secrets. */
export class Secrets {
  /** @internal */
  constructor(private readonly transport: Transport) {}

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
