/** The one place protobuf messages become SDK values (and requests are built). */

import { UpstreamState, type Freshness as PbFreshness } from "./gen/latchkey/v1/common.js";
import * as configPb from "./gen/latchkey/v1/config.js";
import * as discoveryPb from "./gen/latchkey/v1/discovery.js";
import type * as gatewayPb from "./gen/latchkey/v1/gateway.js";
import type * as secretsPb from "./gen/latchkey/v1/secrets.js";
import type { Duration } from "./gen/google/protobuf/duration.js";
import * as m from "./models.js";

const UPSTREAM: ReadonlyMap<UpstreamState, m.UpstreamState> = new Map([
  [UpstreamState.UPSTREAM_STATE_CONNECTED, "connected"],
  [UpstreamState.UPSTREAM_STATE_UNREACHABLE, "unreachable"],
  [UpstreamState.UPSTREAM_STATE_REFUSED, "refused"],
]);
const HEALTH: ReadonlyMap<discoveryPb.HealthStatus, m.HealthStatus> = new Map([
  [discoveryPb.HealthStatus.HEALTH_STATUS_PASSING, "passing"],
  [discoveryPb.HealthStatus.HEALTH_STATUS_WARNING, "warning"],
  [discoveryPb.HealthStatus.HEALTH_STATUS_CRITICAL, "critical"],
]);

const date = (value: Date | undefined): Date | null => value ?? null;
const ms = (d: Duration | undefined): number => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0);

/** A Consul index or other uint64 as a number (exact below 2^53, which Consul never reaches). */
export const num = (value: bigint): number => Number(value);

export const NO_FRESHNESS: m.Freshness = Object.freeze({
  index: 0,
  ageMs: 0,
  stale: false,
  upstream: "unknown",
  lastContact: null,
});

export function freshness(f: PbFreshness | undefined): m.Freshness {
  if (f === undefined) return NO_FRESHNESS;
  return {
    index: num(f.index),
    ageMs: ms(f.age),
    stale: f.stale,
    upstream: UPSTREAM.get(f.upstream) ?? "unknown",
    lastContact: date(f.lastContact),
  };
}

// ---------------------------------------------------------------- secrets

export function secret(resp: secretsPb.GetSecretResponse): m.Secret {
  const md = resp.metadata;
  return new m.Secret(
    resp.data ?? {},
    md?.version ?? 0,
    date(md?.createdTime),
    { ...(md?.customMetadata ?? {}) },
    freshness(resp.freshness),
  );
}

export function credentials(c: secretsPb.DatabaseCredential | undefined): m.DatabaseCredentials {
  return new m.DatabaseCredentials({
    username: c?.username ?? "",
    password: c?.password ?? "",
    leaseId: c?.leaseId ?? "",
    expiresAt: date(c?.leaseExpiresAt),
    maxTtlDeadline: date(c?.maxTtlDeadline),
    renewable: c?.renewable ?? false,
    role: c?.role ?? "",
    issuedAt: date(c?.issuedAt),
  });
}

export function renewed(resp: secretsPb.RenewLeaseResponse): m.RenewedLease {
  return {
    leaseId: resp.leaseId,
    expiresAt: date(resp.leaseExpiresAt),
    renewable: resp.renewable,
    warnings: [...resp.warnings],
  };
}

export function leaseInfo(x: secretsPb.LeaseInfo): m.LeaseInfo {
  return {
    leaseId: x.leaseId,
    role: x.role,
    holder: x.holder,
    username: x.username,
    expiresAt: date(x.leaseExpiresAt),
    maxTtlDeadline: date(x.maxTtlDeadline),
    issuedAt: date(x.issuedAt),
    holders: x.holders,
    renewable: x.renewable,
    replica: x.replica,
  };
}

/** A RenewLease increment from milliseconds (whole seconds, as Vault takes them). */
export function duration(msValue: number): Duration {
  return { seconds: BigInt(Math.floor(msValue / 1000)), nanos: 0 };
}

// ---------------------------------------------------------------- config

export function configEntry(e: configPb.ConfigEntry): m.ConfigEntry {
  const value = Buffer.from(e.value);
  return {
    key: e.key,
    value,
    text: value.toString("utf8"),
    createIndex: num(e.createIndex),
    modifyIndex: num(e.modifyIndex),
    flags: num(e.flags),
  };
}

export function keyChange(c: configPb.KeyChange): m.ConfigChange {
  return {
    type: c.type === configPb.ChangeType.CHANGE_TYPE_DELETE ? "delete" : "put",
    key: c.key,
    entry: c.entry ? configEntry(c.entry) : null,
  };
}

/** Whether two entries hold the same value at the same index. */
export function sameEntry(a: m.ConfigEntry | undefined, b: m.ConfigEntry): boolean {
  return a !== undefined && a.modifyIndex === b.modifyIndex && a.flags === b.flags && a.value.equals(b.value);
}

// ---------------------------------------------------------------- discovery

export function instance(i: discoveryPb.Instance): m.Instance {
  return {
    id: i.id,
    node: i.node,
    address: i.address,
    port: i.port,
    tags: [...i.tags],
    meta: { ...i.meta },
    health: HEALTH.get(i.health) ?? "unknown",
    datacenter: i.datacenter,
  };
}

/** What `services.register` asks for: the checks named (one per target given). */
export interface RegisterFields {
  readonly id: string;
  readonly port: number;
  readonly address?: string | undefined;
  readonly tags?: readonly string[] | undefined;
  readonly meta?: Readonly<Record<string, string>> | undefined;
  readonly httpCheck?: string | undefined;
  readonly tcpCheck?: string | undefined;
  readonly grpcCheck?: string | undefined;
  readonly interval?: string | undefined;
  readonly timeout?: string | undefined;
  readonly deregisterAfter?: string | undefined;
  readonly ttl?: boolean | undefined;
}

export function registerRequest(service: string, f: RegisterFields): discoveryPb.RegisterRequest {
  const targets = [
    ["http", f.httpCheck],
    ["tcp", f.tcpCheck],
    ["grpc", f.grpcCheck],
  ] as const;
  const checks: discoveryPb.ServiceCheck[] = [];
  for (const [kind, value] of targets) {
    if (!value) continue;
    checks.push(
      discoveryPb.ServiceCheck.fromPartial({
        target: { $case: kind, value },
        interval: f.interval ?? "",
        timeout: f.timeout ?? "",
        deregisterCriticalAfter: f.deregisterAfter ?? "",
      }),
    );
  }
  return discoveryPb.RegisterRequest.fromPartial({
    service,
    id: f.id,
    address: f.address ?? "",
    port: f.port,
    tags: [...(f.tags ?? [])],
    meta: { ...(f.meta ?? {}) },
    checks,
    ttlCheck: f.ttl ?? false,
  });
}

export function registrationHealth(instanceId: string, h: discoveryPb.InstanceHealth): m.RegistrationHealth {
  return {
    instanceId,
    status: HEALTH.get(h.status) ?? "unknown",
    checks: h.checks.map((c) => ({
      checkId: c.checkId,
      name: c.name,
      status: HEALTH.get(c.status) ?? "unknown",
      output: c.output,
    })),
    freshness: freshness(h.freshness),
  };
}

// ---------------------------------------------------------------- gateway

export function status(resp: gatewayPb.StatusResponse, address: string): m.GatewayStatus {
  return {
    identity: resp.identity,
    authMethod: resp.authMethod,
    version: resp.version,
    upstreams: resp.upstreams.map((u) => ({
      name: u.name,
      state: UPSTREAM.get(u.state) ?? "unknown",
      lastContact: date(u.lastContact),
      ageSeconds: u.ageSeconds,
    })),
    startedAt: date(resp.startedAt),
    address,
  };
}
