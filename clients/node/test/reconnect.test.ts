/** Streams survive a gateway restart (a process of this file's own) and a dropped connection,
 * and never lose an update made while they were cut off. */

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { Client, type ConfigEvent, type DatabaseCredentials, type StreamStatus } from "@latchkey/client";

import { canLogin, consulKv, eventually, GatewayProcess, nextEvent, Relay, stack, testClient, unique } from "./helpers.js";

describe("reconnecting streams", { timeout: 90_000 }, () => {
  const direct = testClient();
  after(() => direct.close());

  test("a config watch survives a gateway restart and gets the change made while it was down", async () => {
    const gateway = await GatewayProcess.start();
    const client = new Client(gateway.clientOptions());
    const prefix = unique("node-restart");
    await consulKv.put(`${prefix}/k`, "1");
    try {
      const watch = await client.config.watch(`${prefix}/`);
      const creds = await client.database.watch(stack.role("LONG"));
      const before: DatabaseCredentials = creds.current;
      const rotated = nextEvent<DatabaseCredentials>(creds, "rotate");
      const down = nextEvent<StreamStatus>(watch, "unreachable");
      await gateway.stop(); // graceful: revokes the leases it held
      await down;
      await consulKv.put(`${prefix}/k`, "2"); // while no gateway runs
      await consulKv.put(`${prefix}/added`, "x");
      const back = nextEvent<StreamStatus>(watch, "reconnect");
      const caughtUp = nextEvent<ConfigEvent>(watch, "change", (e) => e.entries[`${prefix}/k`]?.text === "2");
      await gateway.start(); // the same port
      await back;
      const event = await caughtUp;
      assert.equal(event.entries[`${prefix}/added`]?.text, "x");
      assert.deepEqual(event.changes.map((c) => `${c.type} ${c.key}`).sort(), [`put ${prefix}/added`, `put ${prefix}/k`]);
      // The old gateway revoked its lease on shutdown: the watch moved to a new one.
      const now = await rotated;
      assert.notEqual(now.leaseId, before.leaseId);
      assert.ok(await canLogin(now.username, now.password));
    } finally {
      await client.close();
      await gateway.stop();
    }
  });

  test("a watch whose connection drops resumes from its last index: missed changes, no snapshot", async () => {
    const prefix = unique("node-resume");
    await consulKv.put(`${prefix}/k`, "1");
    // A direct watch keeps the gateway's history of the prefix alive while the other is cut off.
    const keeper = await direct.config.watch(`${prefix}/`);
    const relay = await Relay.start(stack.addr);
    const client = new Client({ addr: `http://127.0.0.1:${relay.port}`, token: stack.token, env: {} });
    try {
      const watch = await client.config.watch(`${prefix}/`);
      const events: ConfigEvent[] = [];
      watch.on("change", (e) => events.push(e));
      const down = nextEvent(watch, "unreachable");
      await relay.cut();
      await down;
      const seen = nextEvent<ConfigEvent>(keeper, "change", (e) => e.entries[`${prefix}/k`]?.text === "3");
      await consulKv.put(`${prefix}/k`, "2");
      await consulKv.put(`${prefix}/k`, "3");
      await seen;
      const back = nextEvent(watch, "reconnect");
      await relay.listen(); // the same port again
      await back;
      await eventually(() => watch.entries[`${prefix}/k`]?.text === "3", "the missed changes");
      assert.ok(events.length > 0);
      assert.ok(
        events.every((e) => e.kind === "change"),
        "resumed from its index: the gateway replayed changes instead of sending a snapshot",
      );
      // (Consul may fold the two puts into one change; the last value always arrives.)
      assert.equal(events.flatMap((e) => e.changes.map((c) => c.entry?.text)).at(-1), "3");
    } finally {
      await client.close();
      await keeper.close();
      await relay.cut();
    }
  });
});
