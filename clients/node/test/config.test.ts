/** Config reads, watches and typed bindings against the shared gateway and real Consul. */

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { z } from "zod";

import { type ConfigEvent, NotFound } from "@latchkey/client";

import { consulKv, nextEvent, testClient, unique } from "./helpers.js";

describe("config", () => {
  const client = testClient();
  after(() => client.close());

  test("get and list read Consul KV", async () => {
    const prefix = unique("node-config");
    await consulKv.put(`${prefix}/a`, "1");
    await consulKv.put(`${prefix}/b`, "two");
    const entry = await client.config.get(`${prefix}/b`);
    assert.equal(entry.text, "two");
    assert.ok(entry.modifyIndex > 0);
    const keys = (await client.config.list(`${prefix}/`)).map((e) => e.key).sort();
    assert.deepEqual(keys, [`${prefix}/a`, `${prefix}/b`]);
    await assert.rejects(client.config.get(`${prefix}/missing`), NotFound);
  });

  test("watch starts with a snapshot and emits each put and delete", async () => {
    const prefix = unique("node-watch");
    await consulKv.put(`${prefix}/k`, "v1");
    const watch = await client.config.watch(`${prefix}/`);
    try {
      assert.equal(watch.current.kind, "snapshot");
      assert.equal(watch.entries[`${prefix}/k`]?.text, "v1");
      const put = nextEvent<ConfigEvent>(watch, "change", (e) => e.entries[`${prefix}/k`]?.text === "v2");
      await consulKv.put(`${prefix}/k`, "v2");
      const changed = await put;
      assert.equal(changed.kind, "change");
      assert.deepEqual(
        changed.changes.map((c) => [c.type, c.key]),
        [["put", `${prefix}/k`]],
      );
      assert.ok(changed.index >= changed.entries[`${prefix}/k`]!.modifyIndex);
      const gone = nextEvent<ConfigEvent>(watch, "change", (e) => !(`${prefix}/k` in e.entries));
      await consulKv.delete(`${prefix}/k`);
      assert.deepEqual(
        (await gone).changes.map((c) => c.type),
        ["delete"],
      );
    } finally {
      await watch.close();
    }
    assert.equal(watch.closed, true);
  });

  test("a watch is an async iterator that starts with the current state and ends on close", async () => {
    const prefix = unique("node-iter");
    await consulKv.put(`${prefix}/n`, "0");
    const watch = await client.config.watch(`${prefix}/`);
    const seen: string[] = [];
    for await (const event of watch) {
      if (!("entries" in event)) continue;
      const value = event.entries[`${prefix}/n`]?.text ?? "";
      seen.push(value);
      if (value === "0") await consulKv.put(`${prefix}/n`, "1");
      if (value === "1") void watch.close(); // the loop ends once the watch is closed
    }
    assert.deepEqual(seen, ["0", "1"]);
  });

  test("an aborted signal closes the watch", async () => {
    const controller = new AbortController();
    const watch = await client.config.watch(unique("node-abort") + "/", { signal: controller.signal });
    const closed = nextEvent(watch, "close");
    controller.abort();
    await closed;
    assert.equal(watch.closed, true);
  });

  test("bind with zod keeps the last good value and reports invalid updates", async () => {
    const prefix = unique("node-bind");
    await consulKv.put(`${prefix}/log_level`, "info");
    await consulKv.put(`${prefix}/max_connections`, "10");
    await consulKv.put(`${prefix}/feature_flags`, JSON.stringify({ new_checkout: true }));
    const schema = z.object({
      log_level: z.enum(["debug", "info", "warn"]),
      max_connections: z.number().int().positive(),
      feature_flags: z.record(z.string(), z.boolean()),
    });
    const settings = await client.config.bind(`${prefix}/`, schema);
    try {
      assert.deepEqual(settings.value, { log_level: "info", max_connections: 10, feature_flags: { new_checkout: true } });
      const updated = nextEvent(settings, "update");
      await consulKv.put(`${prefix}/max_connections`, "20");
      await updated;
      assert.equal(settings.value.max_connections, 20);
      const rejected = nextEvent<unknown>(settings, "error");
      await consulKv.put(`${prefix}/max_connections`, "-5");
      assert.ok((await rejected) instanceof z.ZodError);
      assert.equal(settings.value.max_connections, 20); // the last good value
      const recovered = nextEvent(settings, "update");
      await consulKv.put(`${prefix}/max_connections`, "30");
      await recovered;
      assert.equal(settings.value.max_connections, 30);
    } finally {
      await settings.close();
    }
  });

  test("bind with a plain validator function; an invalid first snapshot rejects", async () => {
    const prefix = unique("node-bindfn");
    await consulKv.put(`${prefix}/port`, "8080");
    const port = (raw: Record<string, unknown>): number => {
      if (typeof raw["port"] !== "number") throw new TypeError("port must be a number");
      return raw["port"];
    };
    const bound = await client.config.bind(`${prefix}/`, port);
    assert.equal(bound.value, 8080);
    await bound.close();
    await consulKv.put(`${prefix}/port`, "not a number");
    await assert.rejects(client.config.bind(`${prefix}/`, port), TypeError);
  });
  test("bind over layered prefixes: later prefixes win key by key, paths nest, updates revalidate", async () => {
    const base = unique("node-layers");
    const prod = `${base}/env/production`;
    await consulKv.put(`${base}/log_level`, "info");
    await consulKv.put(`${base}/database/host`, "db.internal");
    await consulKv.put(`${base}/database/port`, "5432");
    await consulKv.put(`${base}/feature-flags`, JSON.stringify({ checkout: false }));
    await consulKv.put(`${prod}/database/host`, "db.prod.internal");
    const schema = z.object({
      log_level: z.enum(["debug", "info", "warn"]),
      database: z.object({ host: z.string(), port: z.number().int() }),
      feature_flags: z.record(z.string(), z.boolean()),
    });
    const settings = await client.config.bind(schema, `${base}/`, `${prod}/`);
    try {
      assert.deepEqual(settings.prefixes, [`${base}/`, `${prod}/`]);
      // The production layer's key is not read as base's `env/production/...`.
      assert.deepEqual(settings.value, {
        log_level: "info",
        database: { host: "db.prod.internal", port: 5432 },
        feature_flags: { checkout: false },
      });
      const overridden = nextEvent<{ log_level: string }>(settings, "update", (v) => v.log_level === "warn");
      await consulKv.put(`${prod}/log_level`, "warn");
      await overridden;
      const baseChange = nextEvent<{ database: { port: number } }>(settings, "update", (v) => v.database.port === 6432);
      await consulKv.put(`${base}/database/port`, "6432");
      assert.equal((await baseChange).database.port, 6432);
      assert.equal(settings.value.log_level, "warn"); // still the later layer's
      const fallBack = nextEvent<{ database: { host: string } }>(settings, "update", (v) => v.database.host === "db.internal");
      await consulKv.delete(`${prod}/database/host`);
      await fallBack;
      const rejected = nextEvent<unknown>(settings, "error");
      await consulKv.put(`${prod}/database/port`, "not a port");
      assert.ok((await rejected) instanceof z.ZodError);
      assert.equal(settings.value.database.port, 6432); // the last good value
    } finally {
      await settings.close();
    }
  });

  test("bind checks its arguments", async () => {
    const schema = z.object({});
    // @ts-expect-error: no prefix
    await assert.rejects(client.config.bind(schema), /one or more prefixes/);
    // @ts-expect-error: not a validator
    await assert.rejects(client.config.bind("config/x/", 42), /needs a validator/);
  });
});
