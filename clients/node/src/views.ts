/**
 * Stream state (no I/O): each view turns the gateway's stream messages into the events callers
 * see, remembers where to resume after a reconnect, and reports freshness changes (stale /
 * fresh) once per change.
 */

import * as convert from "./convert.js";
import type * as configPb from "./gen/latchkey/v1/config.js";
import type * as discoveryPb from "./gen/latchkey/v1/discovery.js";
import type * as secretsPb from "./gen/latchkey/v1/secrets.js";
import type {
  ConfigChange,
  ConfigEntry,
  ConfigEvent,
  DatabaseCredentials,
  Freshness,
  ServiceEvent,
  StreamStatus,
} from "./models.js";

/** `target[key] = value` as an own property, also for a key named `__proto__` (a Consul key can
 * be any string; plain assignment would replace the object's prototype). */
function setOwn<V>(target: Record<string, V>, key: string, value: V): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Emits `stale` / `fresh` once when the gateway's view of its upstream changes. */
export class FreshnessTracker {
  stale = false;

  update(freshness: Freshness): StreamStatus | null {
    if (freshness.stale && !this.stale) {
      this.stale = true;
      return { kind: "stale", detail: "the gateway serves cached data", freshness };
    }
    if (!freshness.stale && this.stale) {
      this.stale = false;
      return { kind: "fresh", detail: "the upstream is back", freshness };
    }
    return null;
  }
}

/** The keys under a watched prefix, kept current from snapshots and changes. */
export class ConfigView {
  entries: Record<string, ConfigEntry> = {};
  /** The last index seen, exactly as the gateway sent it (the resume point). */
  resumeIndex = 0n;
  /** The epoch of the snapshot that index belongs to (sent back on resume). */
  resumeEpoch = "";
  current: ConfigEvent | null = null;
  private readonly freshness = new FreshnessTracker();

  apply(msg: configPb.ConfigEvent): Array<ConfigEvent | StreamStatus> {
    const out: Array<ConfigEvent | StreamStatus> = [];
    let fresh: Freshness;
    const event = msg.event;
    if (event?.$case === "snapshot") {
      const snap = event.value;
      const next: Record<string, ConfigEntry> = {};
      for (const e of snap.entries) setOwn(next, e.key, convert.configEntry(e));
      const changes: ConfigChange[] = [];
      for (const [key, entry] of Object.entries(next)) {
        const before = Object.hasOwn(this.entries, key) ? this.entries[key] : undefined;
        if (!convert.sameEntry(before, entry)) changes.push({ type: "put", key, entry });
      }
      for (const key of Object.keys(this.entries)) {
        if (!Object.hasOwn(next, key)) changes.push({ type: "delete", key, entry: null });
      }
      this.entries = next;
      this.resumeIndex = snap.index;
      this.resumeEpoch = snap.epoch;
      fresh = convert.freshness(snap.freshness);
      this.current = this.event("snapshot", changes, snap.index, fresh, snap.reset);
      out.push(this.current);
    } else if (event?.$case === "change") {
      const change = event.value;
      const changes = change.changes.map(convert.keyChange);
      const next: Record<string, ConfigEntry> = { ...this.entries };
      for (const c of changes) {
        if (c.type === "delete") delete next[c.key];
        else if (c.entry !== null) setOwn(next, c.key, c.entry);
      }
      this.entries = next;
      this.resumeIndex = change.index;
      fresh = convert.freshness(change.freshness);
      this.current = this.event("change", changes, change.index, fresh, false);
      out.push(this.current);
    } else if (event?.$case === "heartbeat") {
      fresh = convert.freshness(event.value.freshness);
    } else {
      return out;
    }
    const status = this.freshness.update(fresh);
    if (status !== null) out.push(status);
    return out;
  }

  private event(
    kind: ConfigEvent["kind"],
    changes: ConfigChange[],
    index: bigint,
    freshness: Freshness,
    reset: boolean,
  ): ConfigEvent {
    return { kind, entries: this.entries, changes, index: convert.num(index), reset, freshness };
  }
}

/** The live instance set of a watched service. */
export class ServiceView {
  current: ServiceEvent | null = null;
  private readonly freshness = new FreshnessTracker();

  constructor(readonly service: string) {}

  apply(msg: discoveryPb.ServiceEvent): Array<ServiceEvent | StreamStatus> {
    const out: Array<ServiceEvent | StreamStatus> = [];
    let fresh: Freshness;
    const event = msg.event;
    if (event?.$case === "instances") {
      const set = event.value;
      fresh = convert.freshness(set.freshness);
      this.current = {
        service: this.service,
        instances: set.instances.map(convert.instance),
        index: convert.num(set.index),
        freshness: fresh,
      };
      out.push(this.current);
    } else if (event?.$case === "heartbeat") {
      fresh = convert.freshness(event.value.freshness);
    } else {
      return out;
    }
    const status = this.freshness.update(fresh);
    if (status !== null) out.push(status);
    return out;
  }
}

/** A rotation to switch to and acknowledge. */
export interface Rotation {
  readonly kind: "rotation";
  readonly credentials: DatabaseCredentials;
  readonly previous: DatabaseCredentials | null;
  readonly watchId: string;
  readonly rotationId: string;
  readonly previousLeaseId: string;
  readonly previousRevokeAt: Date | null;
}

/** What a credential stream message means for the application. */
export type CredentialUpdate =
  | { readonly kind: "issued"; readonly credentials: DatabaseCredentials; readonly previous: DatabaseCredentials | null }
  | Rotation
  | { readonly kind: "renewed"; readonly credentials: DatabaseCredentials }
  | { readonly kind: "revoked"; readonly leaseId: string; readonly reason: string; readonly status: StreamStatus | null }
  | { readonly kind: "status"; readonly status: StreamStatus };

/** The credential a watch holds; what a message means for it. */
export class CredentialView {
  current: DatabaseCredentials | null = null;
  watchId = "";
  private readonly freshness = new FreshnessTracker();

  constructor(readonly role: string) {}

  get leaseId(): string {
    return this.current?.leaseId ?? "";
  }

  apply(msg: secretsPb.CredentialEvent): CredentialUpdate | null {
    this.watchId = msg.watchId || this.watchId;
    const event = msg.event;
    const previous = this.current;
    switch (event?.$case) {
      case "issued": {
        this.current = convert.credentials(event.value.credential);
        return { kind: "issued", credentials: this.current, previous };
      }
      case "rotation": {
        const rot = event.value;
        this.current = convert.credentials(rot.credential);
        return {
          kind: "rotation",
          credentials: this.current,
          previous,
          watchId: msg.watchId,
          rotationId: rot.rotationId,
          previousLeaseId: rot.previousLeaseId,
          previousRevokeAt: rot.previousRevokeAt ?? null,
        };
      }
      case "renewed": {
        if (this.current === null || event.value.leaseId !== this.current.leaseId) return null;
        this.current = this.current.with({ expiresAt: event.value.leaseExpiresAt ?? null });
        return { kind: "renewed", credentials: this.current };
      }
      case "revoked": {
        const { leaseId, reason } = event.value;
        const status: StreamStatus | null =
          leaseId === this.current?.leaseId
            ? { kind: "stale", detail: "the current lease was revoked", freshness: null }
            : null;
        return { kind: "revoked", leaseId, reason, status };
      }
      case "heartbeat": {
        const status = this.freshness.update(convert.freshness(event.value.freshness));
        return status === null ? null : { kind: "status", status };
      }
      default:
        return null;
    }
  }
}

/**
 * The plain object a binding validates: keys under the prefix become field names by their path
 * below it (`config/app/pool_size` → `pool_size`, `/` → `__`, `-` → `_`); values are decoded
 * as JSON when they parse, else used as text.
 */
export function fieldValues(prefix: string, entries: Readonly<Record<string, ConfigEntry>>): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  const base = prefix ? prefix.replace(/\/+$/, "") + "/" : "";
  for (const [key, entry] of Object.entries(entries)) {
    let name = key.startsWith(base) ? key.slice(base.length) : key;
    name = name.replace(/^\/+|\/+$/g, "").replaceAll("/", "__").replaceAll("-", "_");
    if (!name) continue;
    let value: unknown;
    try {
      value = JSON.parse(entry.text);
    } catch {
      value = entry.text;
    }
    setOwn(values, name, value);
  }
  return values;
}
