/** The values the SDK hands to applications: plain objects and a few classes, never protobuf. */

/** Reachability of an upstream (Vault or Consul) as the gateway sees it. */
export type UpstreamState = "connected" | "unreachable" | "refused" | "unknown";

/** How fresh a piece of data is. */
export interface Freshness {
  /** The upstream's index of the data (Consul index, KV version). */
  readonly index: number;
  /** Milliseconds since the gateway last confirmed the data with the upstream. */
  readonly ageMs: number;
  /** True when served from the gateway's cache because the upstream is unreachable. */
  readonly stale: boolean;
  /** Reachability of the upstream when the data was sent. */
  readonly upstream: UpstreamState;
  /** When the gateway last heard from the upstream. */
  readonly lastContact: Date | null;
}

function hide<T extends object>(target: T, name: string, value: unknown): void {
  Object.defineProperty(target, name, { value, enumerable: false, writable: false });
}

/** A KV v2 secret. `data` holds secret values: it is not enumerable, so `console.log` and
 * `JSON.stringify` of a `Secret` leave it out. */
export class Secret {
  /** The secret's key/value data as stored in Vault. */
  declare readonly data: Readonly<Record<string, unknown>>;

  constructor(
    data: Record<string, unknown>,
    /** The KV version read. */
    readonly version: number,
    /** When this version was written. */
    readonly createdTime: Date | null,
    /** Vault's custom metadata of the secret. */
    readonly customMetadata: Readonly<Record<string, string>>,
    /** How fresh the answer is. */
    readonly freshness: Freshness,
  ) {
    hide(this, "data", data);
  }
}

/** The fields of a database credential. */
export interface DatabaseCredentialFields {
  readonly username: string;
  readonly password: string;
  readonly leaseId: string;
  readonly expiresAt: Date | null;
  readonly maxTtlDeadline: Date | null;
  readonly renewable: boolean;
  readonly role: string;
  readonly issuedAt: Date | null;
}

/** A database login brokered from Vault. The password is not enumerable: `console.log` and
 * `JSON.stringify` leave it out. */
export class DatabaseCredentials implements DatabaseCredentialFields {
  /** Database user name. */
  readonly username: string;
  /** The password (read it explicitly; it never shows in logs of the object). */
  declare readonly password: string;
  /** The Vault lease id (the handle for renew / revoke). */
  readonly leaseId: string;
  /** When the lease expires unless renewed. */
  readonly expiresAt: Date | null;
  /** When the lease can no longer be renewed (the gateway rotates before this). */
  readonly maxTtlDeadline: Date | null;
  /** Whether Vault will renew the lease. */
  readonly renewable: boolean;
  /** The Vault database role. */
  readonly role: string;
  /** When the credential was issued. */
  readonly issuedAt: Date | null;

  constructor(fields: DatabaseCredentialFields) {
    this.username = fields.username;
    hide(this, "password", fields.password);
    this.leaseId = fields.leaseId;
    this.expiresAt = fields.expiresAt;
    this.maxTtlDeadline = fields.maxTtlDeadline;
    this.renewable = fields.renewable;
    this.role = fields.role;
    this.issuedAt = fields.issuedAt;
  }

  /** A copy with other field values. */
  with(changes: Partial<DatabaseCredentialFields>): DatabaseCredentials {
    return new DatabaseCredentials({ ...this, password: this.password, ...changes });
  }
}

/** The result of renewing a lease. */
export interface RenewedLease {
  readonly leaseId: string;
  readonly expiresAt: Date | null;
  readonly renewable: boolean;
  readonly warnings: readonly string[];
}

/** A lease the gateway holds (operator view; never a password). */
export interface LeaseInfo {
  readonly leaseId: string;
  readonly role: string;
  /** The identity the lease was issued for. */
  readonly holder: string;
  readonly username: string;
  readonly expiresAt: Date | null;
  readonly maxTtlDeadline: Date | null;
  readonly issuedAt: Date | null;
  /** Open holds (streams and unary callers); 0 for another replica's lease. */
  readonly holders: number;
  readonly renewable: boolean;
  /** The gateway replica whose journal holds the lease. */
  readonly replica: string;
}

/** One Consul KV entry. */
export interface ConfigEntry {
  readonly key: string;
  readonly value: Buffer;
  /** The value decoded as UTF-8. */
  readonly text: string;
  readonly createIndex: number;
  readonly modifyIndex: number;
  readonly flags: number;
}

/** A put or delete of one key. */
export interface ConfigChange {
  readonly type: "put" | "delete";
  readonly key: string;
  /** The new entry for puts. */
  readonly entry: ConfigEntry | null;
}

/** Delivered by `config.watch`: the full state of the prefix after a snapshot or change. */
export interface ConfigEvent {
  readonly kind: "snapshot" | "change";
  /** Every key under the prefix after this event. */
  readonly entries: Readonly<Record<string, ConfigEntry>>;
  /** What changed (for a snapshot after a reconnect: what differs from before). */
  readonly changes: readonly ConfigChange[];
  readonly index: number;
  /**
   * True when this snapshot replaced the state outright because the gateway could not prove
   * its history leads on from what the app held (Consul's index reset, another gateway,
   * missed changes): `changes` then lists every difference, deletions included.
   */
  readonly reset: boolean;
  readonly freshness: Freshness;
}

/** Worst check status of an instance. */
export type HealthStatus = "passing" | "warning" | "critical" | "unknown";

/** A healthy (or, when asked for, warning) service instance. */
export interface Instance {
  /** Consul service ID. */
  readonly id: string;
  readonly node: string;
  /** Dial address: the service address, else the node address. */
  readonly address: string;
  readonly port: number;
  readonly tags: readonly string[];
  readonly meta: Readonly<Record<string, string>>;
  readonly health: HealthStatus;
  readonly datacenter: string;
}

/** Delivered by `services.watch`: the complete live instance set. */
export interface ServiceEvent {
  readonly service: string;
  readonly instances: readonly Instance[];
  readonly index: number;
  readonly freshness: Freshness;
}

/** One check of a registered instance, as Consul reports it. */
export interface CheckState {
  readonly checkId: string;
  readonly name: string;
  readonly status: HealthStatus;
  /** The check's last output (for HTTP checks, the response line). */
  readonly output: string;
}

/** Delivered by a registration: the instance's checks whenever a status changes. */
export interface RegistrationHealth {
  readonly instanceId: string;
  /** The worst status among the checks. */
  readonly status: HealthStatus;
  readonly checks: readonly CheckState[];
  readonly freshness: Freshness;
}

/**
 * A change in a stream's health, delivered between data events.
 *
 * `stale`: the gateway serves cached data because its upstream is unreachable; `fresh`: the
 * upstream is back; `unreachable`: the gateway itself cannot be reached (the SDK keeps trying);
 * `reconnected`: the stream is back and the data continues from where it left off.
 */
export interface StreamStatus {
  readonly kind: "stale" | "fresh" | "unreachable" | "reconnected";
  readonly detail: string;
  readonly freshness: Freshness | null;
}

/** One upstream's reachability as the gateway sees it. */
export interface UpstreamStatus {
  readonly name: string;
  readonly state: UpstreamState;
  readonly lastContact: Date | null;
  readonly ageSeconds: number;
}

/** `client.status()`: who the gateway thinks we are, and how fresh its upstreams are. */
export interface GatewayStatus {
  readonly identity: string;
  readonly authMethod: string;
  readonly version: string;
  readonly upstreams: readonly UpstreamStatus[];
  readonly startedAt: Date | null;
  /** The gateway address that answered. */
  readonly address: string;
}
