/** Pieces without I/O: settings, the error table, backoff, stream views, bindings, the bounded
 * iterator queue and the public surface. (Each behaviour also runs end to end in the other
 * test files, against the real gateway.) */

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { inspect } from "node:util";
import { describe, test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import * as sdk from "@latchkey/client";
import {
  Cancelled,
  Client,
  ConfigurationError,
  DatabaseCredentials,
  Internal,
  LatchkeyError,
  NoHealthyInstances,
  NotFound,
  ResourceExhausted,
  StatusError,
  TransportError,
  Unavailable,
} from "@latchkey/client";
import { UpstreamState } from "#internal/gen/latchkey/v1/common.js";
import { ChangeType, ConfigEvent as PbConfigEvent } from "#internal/gen/latchkey/v1/config.js";
import { RegisterEvent, HealthStatus } from "#internal/gen/latchkey/v1/discovery.js";
import { CredentialEvent, SecretEvent } from "#internal/gen/latchkey/v1/secrets.js";
import { ConsulReplicas, parse as parseConsul, targets } from "#internal/consul.js";
import { Backoff } from "#internal/retry.js";
import { resolveSettings } from "#internal/settings.js";
import { injectTrace, loadTraceApi, type TraceApi } from "#internal/trace.js";
import { Transport, translate } from "#internal/transport.js";
import {
  ConfigView,
  CredentialView,
  fieldValues,
  mergeLayers,
  nest,
  RegistrationView,
  SecretView,
} from "#internal/views.js";
import { EventQueue } from "#internal/watch.js";

describe("settings", () => {
  const dir = mkdtempSync(join(tmpdir(), "latchkey-settings-"));
  const pem = join(dir, "ca.pem");
  writeFileSync(pem, "-----BEGIN CERTIFICATE-----\n");

  test("LATCHKEY_* fill what the options leave out; options win", () => {
    const env = { LATCHKEY_ADDR: "gw1:7400, http://gw2:7400", LATCHKEY_TOKEN: "from-env", LATCHKEY_CACERT: pem };
    const fromEnv = resolveSettings({ env });
    assert.deepEqual(fromEnv.endpoints, [
      { target: "gw1:7400", tls: true },
      { target: "gw2:7400", tls: false },
    ]);
    assert.equal(fromEnv.token, "from-env");
    assert.equal(fromEnv.cacert?.toString(), "-----BEGIN CERTIFICATE-----\n");
    const explicit = resolveSettings({ env, addr: ["https://a:1", "b:2"], token: "explicit", timeoutMs: 500 });
    assert.deepEqual(
      explicit.endpoints.map((e) => [e.target, e.tls]),
      [
        ["a:1", true],
        ["b:2", true],
      ],
    );
    assert.equal(explicit.token, "explicit");
    assert.equal(explicit.timeoutMs, 500);
  });

  test("plaintext only for http:// or insecure", () => {
    assert.equal(resolveSettings({ addr: "127.0.0.1:7400", env: {} }).endpoints[0]?.tls, true);
    assert.equal(resolveSettings({ addr: "http://127.0.0.1:7400", env: {} }).endpoints[0]?.tls, false);
    assert.equal(resolveSettings({ addr: "https://h:1", insecure: true, env: {} }).endpoints[0]?.tls, false);
  });

  test("mistakes are ConfigurationErrors that say what to fix", () => {
    assert.throws(() => resolveSettings({ env: {} }), /LATCHKEY_ADDR/);
    assert.throws(() => resolveSettings({ addr: " , ", env: {} }), ConfigurationError);
    assert.throws(() => resolveSettings({ addr: "dns://agent/latchkey", env: {} }), /unsupported address/);
    assert.throws(() => resolveSettings({ addr: "gateway", env: {} }), /no port/);
    assert.throws(() => resolveSettings({ addr: "h:1", clientCert: pem, env: {} }), /needs its key/);
    assert.throws(() => resolveSettings({ addr: "h:1", cacert: join(dir, "missing.pem"), env: {} }), /ENOENT/);
    assert.throws(() => resolveSettings({ addr: "h:1", timeoutMs: 0, env: {} }), /positive/);
  });

  test("PEM contents can be given as buffers", () => {
    const s = resolveSettings({ addr: "h:1", clientCert: Buffer.from("c"), clientKey: Buffer.from("k"), env: {} });
    assert.equal(s.clientCert?.toString(), "c");
    assert.equal(s.clientKey?.toString(), "k");
  });
});

describe("consul:// addresses", () => {
  test("an agent and a service; port 8500 by default", () => {
    const found = parseConsul("consul://10.0.0.5:8500/latchkey");
    assert.deepEqual(
      [found.agent, found.service, found.https, found.datacenter, found.tag, found.token],
      ["10.0.0.5:8500", "latchkey", false, "", "", undefined],
    );
    assert.equal(parseConsul("consul://consul.internal/gw").agent, "consul.internal:8500");
    assert.equal(parseConsul("consul://[::1]/gw").agent, "[::1]:8500");
    assert.equal(parseConsul(" consul://[fd00::2]:8501/gw/ ").agent, "[fd00::2]:8501");
    assert.equal(found.describe(), "consul://10.0.0.5:8500/latchkey");
  });

  test("scheme, datacenter and tag come from the query", () => {
    const found = parseConsul("consul://c:8501/latchkey?scheme=https&dc=eu1&tag=blue");
    assert.deepEqual([found.https, found.datacenter, found.tag], [true, "eu1", "blue"]);
  });

  test("a bad address says what to write", () => {
    const cases: [string, RegExp][] = [
      ["consul://127.0.0.1:8500", /not a Consul address: write consul:\/\/AGENT\/SERVICE/],
      ["consul://127.0.0.1:8500/a/b", /consul:\/\/AGENT\/SERVICE/],
      ["consul://127.0.0.1:99999/latchkey", /consul:\/\/AGENT\/SERVICE/],
      ["consul://tok@127.0.0.1:8500/latchkey", /the Consul token goes in LATCHKEY_CONSUL_TOKEN/],
      ["consul://127.0.0.1:8500/latchkey?token=x", /\["token"\].*take scheme \(http or https\), dc and tag/],
      ["consul://127.0.0.1:8500/latchkey?scheme=ftp", /scheme="ftp" .*use http or https/],
    ];
    for (const [addr, says] of cases) {
      assert.throws(() => parseConsul(addr), (err: Error) => err instanceof ConfigurationError && says.test(err.message));
    }
  });

  test("settings take the token from LATCHKEY_CONSUL_TOKEN only, and keep it out of logs", () => {
    const settings = resolveSettings({
      addr: "consul://127.0.0.1:8500/latchkey",
      env: { LATCHKEY_CONSUL_TOKEN: "acl-secret" },
    });
    assert.deepEqual(settings.endpoints, []);
    assert.ok(settings.replicas instanceof ConsulReplicas);
    assert.equal(settings.replicas.token, "acl-secret");
    assert.ok(!inspect(settings, { depth: 5 }).includes("acl-secret"));
    assert.ok(!JSON.stringify(settings).includes("acl-secret"));
    assert.equal(settings.replicasTls, true); // like a bare host:port
    const fromEnv = resolveSettings({ insecure: true, env: { LATCHKEY_ADDR: "consul://c/gw" } });
    assert.equal(fromEnv.replicas?.describe(), "consul://c:8500/gw");
    assert.equal(fromEnv.replicasTls, false);
  });

  test("a consul:// address stands alone; a static list keeps working", () => {
    for (const addr of ["consul://127.0.0.1:8500/latchkey,127.0.0.1:7400", ["consul://c/latchkey", "h:1"]]) {
      assert.throws(() => resolveSettings({ addr, env: {} }), /a consul:\/\/ address stands alone/);
    }
    const settings = resolveSettings({ addr: "a:7400, b:7400", env: {} });
    assert.deepEqual(
      settings.endpoints.map((e) => e.target),
      ["a:7400", "b:7400"],
    );
    assert.equal(settings.replicas, undefined);
  });

  test("targets: the service's address, else its node's; sorted, IPv6 in brackets", () => {
    const body = [
      { Node: { Address: "10.0.0.1" }, Service: { Address: "", Port: 7400 } },
      { Node: { Address: "10.0.0.2" }, Service: { Address: "10.1.0.9", Port: 7401 } },
      { Node: { Address: "10.0.0.3" }, Service: { Address: "fd00::1", Port: 7400 } },
      { Node: { Address: "10.0.0.4" }, Service: { Address: "x", Port: 0 } }, // no port
      { Node: { Address: "10.0.0.1" }, Service: { Port: 7400 } }, // a duplicate
      { Node: {}, Service: { Port: 7402 } }, // no address at all
      "not an entry",
    ];
    assert.deepEqual(targets(body), ["10.0.0.1:7400", "10.1.0.9:7401", "[fd00::1]:7400"]);
    assert.deepEqual(targets([]), []);
    assert.throws(
      () => targets({ error: "x" }),
      (err: Error) => err instanceof Unavailable && /unexpected health answer/.test(err.message),
    );
  });

  test("a client names where it finds the gateways and does no I/O until used", async () => {
    const client = new Client({ addr: "consul://127.0.0.1:1/latchkey", token: "t", env: {} });
    assert.equal(client.address, "consul://127.0.0.1:1/latchkey");
    await client.close();
  });
});

describe("errors", () => {
  test("the tree, and a class per gRPC code", () => {
    assert.ok(new NotFound("x") instanceof StatusError);
    assert.ok(new NoHealthyInstances("x") instanceof NotFound);
    assert.ok(new Cancelled("x") instanceof TransportError);
    assert.ok(new ConfigurationError("x") instanceof LatchkeyError);
    assert.equal(LatchkeyError.forCode("NOT_FOUND"), NotFound);
    assert.equal(LatchkeyError.forCode("UNAVAILABLE"), Unavailable);
    assert.equal(LatchkeyError.forCode("DATA_LOSS"), Internal);
    assert.equal(new NotFound("x").name, "NotFound");
    assert.equal(new Unavailable("x").code, "UNAVAILABLE");
  });

  test("translate maps status codes and reads the retry-after trailer", () => {
    const metadata = new grpc.Metadata();
    metadata.set("retry-after", "2");
    const unavailable = translate({ code: grpc.status.UNAVAILABLE, details: "Vault is down", metadata });
    assert.ok(unavailable instanceof Unavailable);
    assert.equal(unavailable.retryAfterMs, 2_000);
    assert.equal(unavailable.message, "Vault is down");
    const other = translate({ code: grpc.status.UNIMPLEMENTED, details: "", metadata: new grpc.Metadata() });
    assert.ok(other instanceof Internal);
    assert.equal(other.code, "UNIMPLEMENTED");
    assert.match(other.message, /UNIMPLEMENTED/);
    assert.ok(translate(new Error("boom")) instanceof Internal);
  });
});

describe("backoff", () => {
  test("full jitter below the cap, never below retry-after (itself capped)", () => {
    const backoff = new Backoff(100, 2_000);
    for (let attempt = 0; attempt < 8; attempt++) {
      const cap = Math.min(2_000, 100 * 2 ** attempt);
      for (let i = 0; i < 50; i++) {
        const wait = backoff.delayMs(attempt);
        assert.ok(wait >= 0 && wait <= cap);
        assert.ok(backoff.delayMs(attempt, 1_000) >= 1_000);
        assert.ok(backoff.delayMs(attempt, 60_000) <= 2_000);
      }
    }
  });
});

const freshness = (stale: boolean) => ({
  index: 7n,
  age: undefined,
  stale,
  upstream: stale ? UpstreamState.UPSTREAM_STATE_UNREACHABLE : UpstreamState.UPSTREAM_STATE_CONNECTED,
  lastContact: undefined,
});
const entry = (key: string, value: string, index: bigint) => ({
  key,
  value: Buffer.from(value),
  createIndex: index,
  modifyIndex: index,
  flags: 0n,
});

describe("config view", () => {
  test("snapshots, changes, resume index and stale/fresh once per change", () => {
    const view = new ConfigView();
    const first = view.apply(
      PbConfigEvent.fromPartial({
        event: { $case: "snapshot", value: { entries: [entry("p/a", "1", 5n)], index: 5n, freshness: freshness(false) } },
      }),
    );
    assert.equal(first.length, 1);
    assert.equal(view.resumeIndex, 5n);
    view.apply(
      PbConfigEvent.fromPartial({
        event: {
          $case: "change",
          value: {
            changes: [
              { type: ChangeType.CHANGE_TYPE_PUT, key: "p/b", entry: entry("p/b", "2", 6n) },
              { type: ChangeType.CHANGE_TYPE_DELETE, key: "p/a" },
            ],
            index: 6n,
            freshness: freshness(false),
          },
        },
      }),
    );
    assert.deepEqual(Object.keys(view.entries), ["p/b"]);
    assert.equal(view.resumeIndex, 6n);
    const heartbeat = (stale: boolean) =>
      view.apply(PbConfigEvent.fromPartial({ event: { $case: "heartbeat", value: { freshness: freshness(stale) } } }));
    assert.deepEqual(
      heartbeat(true).map((s) => ("kind" in s ? s.kind : "")),
      ["stale"],
    );
    assert.deepEqual(heartbeat(true), []); // once per change
    assert.deepEqual(
      heartbeat(false).map((s) => ("kind" in s ? s.kind : "")),
      ["fresh"],
    );
    // A snapshot after a reconnect reports what differs from before.
    const again = view.apply(
      PbConfigEvent.fromPartial({
        event: {
          $case: "snapshot",
          value: { entries: [entry("p/b", "2", 6n), entry("p/c", "3", 8n)], index: 8n, freshness: freshness(false) },
        },
      }),
    );
    const event = again[0] as sdk.ConfigEvent;
    assert.deepEqual(
      event.changes.map((c) => `${c.type} ${c.key}`),
      ["put p/c"],
    );
  });

  test("fieldValues maps keys to fields and decodes JSON", () => {
    const entries = {
      "config/app/pool_size": { ...entry("config/app/pool_size", "4", 1n), text: "4" },
      "config/app/log-level": { ...entry("config/app/log-level", "info", 1n), text: "info" },
      "config/app/db/host": { ...entry("config/app/db/host", '"h"', 1n), text: '"h"' },
      "config/app/__proto__": { ...entry("config/app/__proto__", '{"polluted":true}', 1n), text: '{"polluted":true}' },
    } as unknown as Record<string, sdk.ConfigEntry>;
    const values = fieldValues("config/app/", entries);
    assert.equal(values["pool_size"], 4);
    assert.equal(values["log_level"], "info");
    assert.equal(values["db__host"], "h");
    assert.deepEqual(Object.getOwnPropertyDescriptor(values, "__proto__")?.value, { polluted: true });
    assert.equal(Object.getPrototypeOf(values), Object.prototype);
  });
});

describe("credential view", () => {
  const cred = (lease: string) => ({
    username: `u-${lease}`,
    password: "p",
    leaseId: lease,
    leaseExpiresAt: new Date(1_000),
    maxTtlDeadline: undefined,
    renewable: true,
    role: "r",
    issuedAt: undefined,
  });

  test("issued, renewed, rotation, revoked and heartbeat freshness", () => {
    const view = new CredentialView("r");
    const issued = view.apply(CredentialEvent.fromPartial({ watchId: "w", event: { $case: "issued", value: { credential: cred("l1") } } }));
    assert.equal(issued?.kind, "issued");
    const renewed = view.apply(
      CredentialEvent.fromPartial({ event: { $case: "renewed", value: { leaseId: "l1", leaseExpiresAt: new Date(5_000) } } }),
    );
    assert.equal(renewed?.kind, "renewed");
    assert.equal(view.current?.expiresAt?.getTime(), 5_000);
    assert.equal(view.current?.password, "p");
    const rotation = view.apply(
      CredentialEvent.fromPartial({
        watchId: "w",
        event: { $case: "rotation", value: { credential: cred("l2"), rotationId: "r1", previousLeaseId: "l1" } },
      }),
    );
    assert.equal(rotation?.kind, "rotation");
    assert.equal(view.leaseId, "l2");
    const revoked = view.apply(CredentialEvent.fromPartial({ event: { $case: "revoked", value: { leaseId: "l2", reason: "x" } } }));
    assert.equal(revoked?.kind === "revoked" && revoked.status?.kind, "stale");
    const stale = view.apply(
      CredentialEvent.fromPartial({ event: { $case: "heartbeat", value: { freshness: freshness(true) } } }),
    );
    assert.equal(stale?.kind === "status" && stale.status.kind, "stale");
  });
});

describe("layered bindings", () => {
  const layer = (prefix: string, values: Record<string, string>) => ({
    prefix,
    entries: Object.fromEntries(
      Object.entries(values).map(([k, v]) => [k, { ...entry(k, v, 1n), text: v } as unknown as sdk.ConfigEntry]),
    ),
  });

  test("later layers win key by key; a later layer's keys are not read by an earlier one", () => {
    const flat = mergeLayers([
      layer("config/app/", {
        "config/app/db/host": "base",
        "config/app/db/port": "5432",
        "config/app/env/prod/db/host": "prod", // under the later prefix: not base's env/prod/...
      }),
      layer("config/app/env/prod", { "config/app/env/prod/db/host": "prod", "config/app/env/prod/debug": "true" }),
    ]);
    assert.deepEqual(Object.fromEntries(flat), { "db/host": "prod", "db/port": 5432, debug: true });
  });

  test("nest makes objects of path segments, reads - as _, keeps declared flat fields", () => {
    const flat = new Map<string, unknown>([
      ["database/host", "h"],
      ["database/max-conns", 4],
      ["cache/ttl", 30],
      ["log-level", "info"],
      ["__proto__/polluted", true],
    ]);
    const tree = nest(flat, new Set(["cache__ttl"]));
    const proto = Object.getOwnPropertyDescriptor(tree, "__proto__")?.value as object;
    assert.deepEqual({ ...proto }, { polluted: true }); // an own key, never the prototype
    delete tree["__proto__"];
    assert.deepEqual(JSON.parse(JSON.stringify(tree)), {
      database: { host: "h", max_conns: 4 },
      cache__ttl: 30,
      log_level: "info",
    });
    assert.equal(Object.getPrototypeOf(tree), Object.prototype);
    assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
  });

  test("a key that is both a value and a folder keeps the folder, the value under \"\"", () => {
    const tree = nest(
      new Map<string, unknown>([
        ["db", "x"],
        ["db/host", "h"],
      ]),
    );
    assert.deepEqual({ ...(tree["db"] as object) }, { "": "x", host: "h" });
  });
});

describe("secret and registration views", () => {
  const version = (v: number, stale = false) =>
    SecretEvent.fromPartial({
      event: {
        $case: "version",
        value: { data: { k: `value-${v}` }, metadata: { version: v }, freshness: freshness(stale) },
      },
    });

  test("a secret view reports each new version once, and stale/fresh once per change", () => {
    const view = new SecretView();
    assert.equal((view.apply(version(1))[0] as sdk.Secret).version, 1);
    assert.deepEqual(view.apply(version(1)), []); // the same version again (after a reconnect)
    const next = view.apply(version(2));
    assert.equal((next[0] as sdk.Secret).data["k"], "value-2");
    assert.deepEqual(
      view.apply(SecretEvent.fromPartial({ event: { $case: "heartbeat", value: { freshness: freshness(true) } } })).map(
        (s) => (s as sdk.StreamStatus).kind,
      ),
      ["stale"],
    );
    assert.deepEqual(
      view.apply(version(2)).map((s) => (s as sdk.StreamStatus).kind),
      ["fresh"],
    );
  });

  test("a registration view keeps the id the gateway gave and the latest health", () => {
    const view = new RegistrationView("");
    assert.deepEqual(
      view.apply(RegisterEvent.fromPartial({ event: { $case: "registered", value: { instanceId: "web-1a2b" } } })),
      [],
    );
    assert.equal(view.instanceId, "web-1a2b");
    const [health] = view.apply(
      RegisterEvent.fromPartial({
        event: {
          $case: "health",
          value: {
            status: HealthStatus.HEALTH_STATUS_CRITICAL,
            checks: [{ checkId: "c", name: "tcp", status: HealthStatus.HEALTH_STATUS_CRITICAL, output: "refused" }],
            freshness: freshness(false),
          },
        },
      }),
    );
    assert.deepEqual(health, {
      instanceId: "web-1a2b",
      status: "critical",
      checks: [{ checkId: "c", name: "tcp", status: "critical", output: "refused" }],
      freshness: view.health?.freshness,
    });
  });
});

describe("trace propagation", () => {
  test("the active context goes into the call metadata through the registered propagator", () => {
    const seen: unknown[] = [];
    const active = { span: "0af7651916cd43dd8448eb211c80319c" };
    const stub: TraceApi = {
      context: { active: () => active },
      propagation: {
        inject(context, carrier, setter) {
          seen.push(context);
          setter.set(carrier, "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        },
      },
    };
    const metadata = new grpc.Metadata();
    injectTrace(metadata, stub);
    assert.deepEqual(seen, [active]);
    assert.deepEqual(metadata.get("traceparent"), ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]);
  });

  test("without @opentelemetry/api nothing is added; a failing propagator never fails the call", () => {
    // The SDK does not depend on it, and this package's tests do not install it.
    assert.equal(loadTraceApi(), null);
    const metadata = new grpc.Metadata();
    injectTrace(metadata, null);
    const throwing: TraceApi = {
      context: { active: () => ({}) },
      propagation: {
        inject() {
          throw new Error("broken propagator");
        },
      },
    };
    injectTrace(metadata, throwing);
    assert.deepEqual(metadata.toJSON(), {});
  });

  test("a client's calls carry the context of @opentelemetry/api when it resolves", () => {
    const dir = mkdtempSync(join(tmpdir(), "latchkey-otel-"));
    const pkg = join(dir, "node_modules", "@opentelemetry", "api");
    mkdirSync(pkg, { recursive: true });
    // A stand-in package where the application's would be: resolution, not OpenTelemetry, is tested.
    writeFileSync(join(pkg, "package.json"), JSON.stringify({ name: "@opentelemetry/api", main: "index.js" }));
    writeFileSync(
      join(pkg, "index.js"),
      "exports.context = { active: () => 'ctx' };\n" +
        "exports.propagation = { inject: (c, carrier, setter) => setter.set(carrier, 'traceparent', 'from-' + c) };\n",
    );
    const api = loadTraceApi(pathToFileURL(join(dir, "app.js")).href);
    assert.notEqual(api, null);
    const transport = new Transport(resolveSettings({ addr: "http://127.0.0.1:1", env: {} }), undefined, api);
    assert.deepEqual(transport.metadata().get("traceparent"), ["from-ctx"]);
    const plain = new Transport(resolveSettings({ addr: "http://127.0.0.1:1", env: {} }));
    assert.deepEqual(plain.metadata().get("traceparent"), []);
  });
});

describe("values", () => {
  test("a credential's password stays out of inspect and JSON", () => {
    const creds = new DatabaseCredentials({
      username: "u",
      password: "hunter2",
      leaseId: "l",
      expiresAt: null,
      maxTtlDeadline: null,
      renewable: false,
      role: "r",
      issuedAt: null,
    });
    assert.equal(creds.password, "hunter2");
    assert.ok(!inspect(creds).includes("hunter2"));
    assert.ok(!JSON.stringify(creds).includes("hunter2"));
    assert.equal(creds.with({ role: "s" }).password, "hunter2");
  });

  test("the iterator queue is bounded: falling behind fails it, never drops silently", async () => {
    const queue = new EventQueue<number>(() => undefined, 3);
    for (const n of [1, 2, 3, 4]) queue.push(n);
    assert.deepEqual(await queue.next(), { value: 1, done: false });
    assert.deepEqual(await queue.next(), { value: 2, done: false });
    assert.deepEqual(await queue.next(), { value: 3, done: false });
    await assert.rejects(queue.next(), ResourceExhausted);
    assert.deepEqual(await queue.next(), { value: undefined, done: true });
  });
});

test("the public surface", () => {
  assert.deepEqual(Object.keys(sdk).sort(), [
    "Binding",
    "Cancelled",
    "Client",
    "Config",
    "ConfigWatch",
    "ConfigurationError",
    "Database",
    "DatabaseCredentials",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "LatchkeyError",
    "Leases",
    "NoHealthyInstances",
    "NotFound",
    "PermissionDenied",
    "Registration",
    "ResourceExhausted",
    "RotatingCredentials",
    "Secret",
    "Secrets",
    "ServiceWatch",
    "Services",
    "StatusCode",
    "StatusError",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
    "VERSION",
    "WatchedSecret",
  ]);
});
