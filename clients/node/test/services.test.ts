/** Discovery against the shared gateway and real Consul health checks. */

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { NoHealthyInstances, type ServiceEvent } from "@latchkey/client";

import { eventually, nextEvent, registerService, setHealth, testClient } from "./helpers.js";

describe("services", () => {
  const client = testClient();
  after(() => client.close());

  test("healthy lists only passing instances", async () => {
    const service = `node-healthy-${process.pid}`;
    await registerService(service, 1, "passing");
    await registerService(service, 2, "critical");
    await eventually(async () => (await client.services.healthy(service)).length === 1, "one passing instance");
    const [only] = await client.services.healthy(service);
    assert.equal(only?.id, `${service}-1`);
    assert.equal(only?.port, 9001);
    assert.equal(only?.health, "passing");
    assert.deepEqual(only?.tags, ["node"]);
  });

  test("watch emits the full set when an instance's health changes", async () => {
    const service = `node-watch-${process.pid}`;
    await registerService(service, 1, "passing");
    const two = await registerService(service, 2, "critical");
    const watch = await client.services.watch(service);
    try {
      await eventually(() => watch.instances.length === 1, "the first passing set");
      const both = nextEvent<ServiceEvent>(watch, "change", (e) => e.instances.length === 2);
      await setHealth(two, "pass");
      const ids = (await both).instances.map((i) => i.id).sort();
      assert.deepEqual(ids, [`${service}-1`, `${service}-2`]);
    } finally {
      await watch.close();
    }
  });

  test("pick chooses among passing instances, at random or in turn, and follows health", async () => {
    const service = `node-pick-${process.pid}`;
    const one = await registerService(service, 1, "passing");
    await registerService(service, 2, "passing");
    await registerService(service, 3, "critical");
    await eventually(async () => (await client.services.healthy(service)).length === 2, "two passing instances");
    const picked = new Set<string>();
    await eventually(async () => {
      picked.add((await client.services.pick(service)).id);
      return picked.size === 2;
    }, "random picks to reach both passing instances");
    assert.deepEqual([...picked].sort(), [`${service}-1`, `${service}-2`]);
    const turns = [];
    for (let i = 0; i < 4; i++) turns.push((await client.services.pick(service, { strategy: "round-robin" })).id);
    assert.equal(new Set(turns.slice(0, 2)).size, 2);
    assert.deepEqual(turns.slice(0, 2), turns.slice(2, 4));
    await setHealth(one, "fail");
    // In turn over two instances never picks the same one twice in a row: twice -2 means -1 left.
    const inTurn = { strategy: "round-robin" } as const;
    await eventually(async () => {
      const [a, b] = [await client.services.pick(service, inTurn), await client.services.pick(service, inTurn)];
      return a.id === `${service}-2` && b.id === `${service}-2`;
    }, "the live set to drop the failed instance");
  });

  test("pick rejects with NoHealthyInstances when nothing passes", async () => {
    const service = `node-none-${process.pid}`;
    await registerService(service, 1, "critical");
    await assert.rejects(client.services.pick(service), NoHealthyInstances);
  });
});
