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
  RegistrationHealth,
  Secret,
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

/** The latest version of a watched secret. */
export class SecretView {
  current: Secret | null = null;
  private readonly freshness = new FreshnessTracker();

  /** A new version (the first one, or one that differs from the current) and freshness changes;
   * a version seen again after a reconnect is not reported twice. */
  apply(msg: secretsPb.SecretEvent): Array<Secret | StreamStatus> {
    const out: Array<Secret | StreamStatus> = [];
    let fresh: Freshness;
    const event = msg.event;
    if (event?.$case === "version") {
      const next = convert.secret(event.value);
      if (this.current === null || next.version !== this.current.version) out.push(next);
      this.current = next;
      fresh = next.freshness;
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

/** A registration's instance id (kept across reconnects, so that the gateway registers the same
 * instance again) and its latest health. */
export class RegistrationView {
  health: RegistrationHealth | null = null;
  private readonly freshness = new FreshnessTracker();

  constructor(public instanceId: string) {}

  apply(msg: discoveryPb.RegisterEvent): Array<RegistrationHealth | StreamStatus> {
    const out: Array<RegistrationHealth | StreamStatus> = [];
    let fresh: Freshness;
    const event = msg.event;
    if (event?.$case === "registered") {
      this.instanceId = event.value.instanceId;
      return out;
    } else if (event?.$case === "health") {
      this.health = convert.registrationHealth(this.instanceId, event.value);
      out.push(this.health);
      fresh = this.health.freshness;
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

function folder(prefix: string): string {
  return prefix ? prefix.replace(/\/+$/, "") + "/" : "";
}

function decode(entry: ConfigEntry): unknown {
  try {
    return JSON.parse(entry.text);
  } catch {
    return entry.text;
  }
}

/**
 * Relative path → decoded value over every layer (prefix and its entries), later layers winning
 * key by key. A key of an earlier layer that lies under a later layer's prefix
 * (`config/myapp/env/production/x` under `config/myapp/`) belongs to that later layer only.
 */
export function mergeLayers(
  layers: ReadonlyArray<{ readonly prefix: string; readonly entries: Readonly<Record<string, ConfigEntry>> }>,
): Map<string, unknown> {
  const flat = new Map<string, unknown>();
  layers.forEach(({ prefix, entries }, i) => {
    const base = folder(prefix);
    const later = layers
      .slice(i + 1)
      .map((l) => folder(l.prefix))
      .filter((p) => p !== base);
    for (const [key, entry] of Object.entries(entries)) {
      if (later.some((p) => key.startsWith(p))) continue;
      const name = (key.startsWith(base) ? key.slice(base.length) : key).replace(/^\/+|\/+$/g, "");
      if (!name) continue;
      flat.delete(name); // a later layer's value takes the key's place
      flat.set(name, decode(entry));
    }
  });
  return flat;
}

function isTree(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && Object.getPrototypeOf(value) === null;
}

/**
 * `database/host` → `{ database: { host } }`, `-` read as `_` in each segment. A field the
 * schema declares flat (`database__host`, from a zod object's `shape`) takes the whole path
 * instead. A key that is both a value and a folder keeps the folder (the value goes under `""`,
 * where validation names it). Objects are built without a prototype-bearing `__proto__` key.
 */
export function nest(flat: ReadonlyMap<string, unknown>, declared: ReadonlySet<string> = new Set()): Record<string, unknown> {
  const tree: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const [path, value] of flat) {
    const segments = path.split("/").map((s) => s.replaceAll("-", "_"));
    const joined = segments.join("__");
    if (segments.length > 1 && declared.has(joined)) {
      setOwn(tree, joined, value);
      continue;
    }
    let node = tree;
    for (const segment of segments.slice(0, -1)) {
      const child = Object.hasOwn(node, segment) ? node[segment] : undefined;
      if (isTree(child)) {
        node = child;
        continue;
      }
      const made = Object.create(null) as Record<string, unknown>;
      if (child !== undefined) setOwn(made, "", child);
      setOwn(node, segment, made);
      node = made;
    }
    const last = segments[segments.length - 1]!;
    const existing = Object.hasOwn(node, last) ? node[last] : undefined;
    if (isTree(existing)) setOwn(existing, "", value);
    else setOwn(node, last, value);
  }
  return plain(tree);
}

/** The tree as ordinary objects (validators such as zod expect plain objects). */
function plain(tree: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(tree)) setOwn(out, key, isTree(value) ? plain(value) : value);
  return out;
}
