/** Discovery against the shared gateway and real Consul health checks. */

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { Client, InvalidArgument, NoHealthyInstances, NotFound, type RegistrationHealth, type ServiceEvent } from "@latchkey/client";

import { eventually, nextEvent, Relay, registerService, setHealth, stack, testClient } from "./helpers.js";

describe("services", () => {
  const client = testClient();
  after(() => client.close());

  /** Whether `id` is among the passing instances (Consul knowing none at all is NotFound). */
  const listed = async (service: string, id: string): Promise<boolean> =>
    client.services.healthy(service).then(
      (instances) => instances.some((i) => i.id === id),
      (err: unknown) => {
        if (err instanceof NotFound) return false;
        throw err;
      },
    );

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
  test("register keeps a TTL-checked instance in services.healthy while open, and removes it on close", async () => {
    const service = `node-register-${process.pid}`;
    const registration = await client.services.register(service, {
      port: 7123,
      address: "127.0.0.1",
      tags: ["node-sdk"],
      meta: { version: "1.2.3" },
      ttl: true,
    });
    const id = registration.instanceId;
    try {
      assert.match(id, new RegExp(`^${service}-`));
      await eventually(() => registration.status === "passing", "the TTL check to pass");
      assert.ok(registration.health?.checks.length === 1);
      await eventually(
        async () => (await client.services.healthy(service)).some((i) => i.id === id),
        "the registration in services.healthy",
      );
      const [instance] = (await client.services.healthy(service)).filter((i) => i.id === id);
      assert.equal(instance?.port, 7123);
      assert.equal(instance?.address, "127.0.0.1");
      assert.deepEqual(instance?.tags, ["node-sdk"]);
      assert.equal(instance?.meta["version"], "1.2.3");
    } finally {
      await registration.close();
    }
    assert.equal(registration.closed, true);
    await eventually(async () => !(await listed(service, id)), "the instance to be deregistered");
  });

  test("register with a check Consul runs emits its status changes", async () => {
    const service = `node-register-tcp-${process.pid}`;
    // Nothing listens on port 1: the TCP check goes critical.
    await using registration = await client.services.register(service, {
      port: 1,
      address: "127.0.0.1",
      instanceId: `${service}-fixed`,
      tcpCheck: "127.0.0.1:1",
      interval: "1s",
      timeout: "1s",
    });
    assert.equal(registration.instanceId, `${service}-fixed`);
    if (registration.status !== "critical") {
      await nextEvent<RegistrationHealth>(registration, "change", (h) => h.status === "critical");
    }
    assert.equal(registration.health?.checks[0]?.status, "critical");
    assert.deepEqual(await client.services.healthy(service), []);
  });

  test("bad register input is rejected with what to fix", async () => {
    await assert.rejects(client.services.register("node-bad", { port: 70_000 }), /port must be a whole number/);
    const err = await client.services.register("not a name!", { port: 80, ttl: true }).then(
      () => assert.fail("expected InvalidArgument"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof InvalidArgument);
    assert.match(err.message, /service/);
  });

  test("a registration re-registers the same instance id after a reconnect", async () => {
    const service = `node-register-cut-${process.pid}`;
    const relay = await Relay.start(stack.addr);
    const cut = new Client({ addr: `http://127.0.0.1:${relay.port}`, token: stack.token, env: {} });
    try {
      const registration = await cut.services.register(service, { port: 7124, address: "127.0.0.1", ttl: true });
      const id = registration.instanceId;
      await eventually(() => listed(service, id), "the registration in services.healthy");
      const down = nextEvent(registration, "unreachable");
      await relay.cut(); // the gateway sees the stream end and deregisters the instance
      await down;
      await eventually(async () => !(await listed(service, id)), "the cut-off instance to be deregistered");
      const back = nextEvent(registration, "reconnect");
      await relay.listen();
      await back;
      await eventually(() => listed(service, id), "the same instance id registered again");
      assert.equal(registration.instanceId, id);
    } finally {
      await cut.close();
      await relay.cut();
    }
  });
});
