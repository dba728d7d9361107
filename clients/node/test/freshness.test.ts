/** Freshness on streams: a gateway of this file's own reaches Consul through a relay; cutting
 * the relay makes Consul unreachable for it, and its streams say so (stale, then fresh). */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Client, type ConfigEvent, type ServiceEvent, type StreamStatus } from "@latchkey/client";

import { consulKv, GatewayProcess, nextEvent, Relay, registerService, stack, unique } from "./helpers.js";

describe("a gateway that loses Consul", { timeout: 60_000 }, () => {
  let relay: Relay;
  let gateway: GatewayProcess;
  before(async () => {
    relay = await Relay.start(stack.consul);
    gateway = await GatewayProcess.start({ consulAddr: `127.0.0.1:${relay.port}` });
  });
  after(async () => {
    await gateway?.stop();
    await relay?.cut();
  });

  test("config and service streams go stale with the last data, then fresh again", async () => {
    const prefix = unique("node-fresh");
    await consulKv.put(`${prefix}/k`, "1");
    const service = `node-fresh-${process.pid}`;
    await registerService(service, 1, "passing");
    const client = new Client(gateway.clientOptions());
    try {
      const config = await client.config.watch(`${prefix}/`);
      const services = await client.services.watch(service);
      assert.equal(config.current.freshness.upstream, "connected");
      const configStale = nextEvent<StreamStatus>(config, "stale");
      const servicesStale = nextEvent<StreamStatus>(services, "stale");
      await relay.cut();
      const [c, s] = await Promise.all([configStale, servicesStale]);
      for (const status of [c, s]) {
        assert.equal(status.kind, "stale");
        assert.equal(status.freshness?.stale, true);
        assert.equal(status.freshness?.upstream, "unreachable");
      }
      // The last known data stays available while stale.
      assert.equal(config.entries[`${prefix}/k`]?.text, "1");
      assert.equal(services.instances.length, 1);
      const configFresh = nextEvent<StreamStatus>(config, "fresh");
      const servicesFresh = nextEvent<StreamStatus>(services, "fresh");
      const changed = nextEvent<ConfigEvent>(config, "change", (e) => e.entries[`${prefix}/k`]?.text === "2");
      await consulKv.put(`${prefix}/k`, "2"); // while the gateway cannot see Consul
      await relay.listen();
      await Promise.all([configFresh, servicesFresh, changed]);
      assert.equal(config.current.freshness.stale, false);
      assert.ok((services.current as ServiceEvent).freshness.upstream !== "unreachable");
    } finally {
      await client.close();
    }
  });
});
