/** `consul://AGENT/SERVICE` against the real Consul and real gateways: the replicas registered
 * there are the client's failover list, kept current, and kept when Consul is cut off or lists
 * nothing. Each test uses a service of its own (other test files start gateways that register
 * as `latchkey` meanwhile). */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";

import { Cancelled, Client, type ConfigEvent, Unavailable } from "@latchkey/client";
import { PassingQuery, parse } from "#internal/consul.js";

import { consulKv, eventually, freePort, GatewayProcess, nextEvent, Relay, stack, unique } from "./helpers.js";

const PACKAGE_DIR = fileURLToPath(new URL("../../", import.meta.url)); // clients/node

/** A client of the gateways Consul lists as `service` (plaintext, as the test gateways serve). */
function consulClient(agent: string, service: string, options: { retryDeadlineMs?: number } = {}): Client {
  return new Client({ addr: `consul://${agent}/${service}`, token: stack.token, insecure: true, env: {}, ...options });
}

function serviceName(what: string): string {
  return unique(what).replace(/\W+/g, "-");
}

/** Register the shared gateway as an instance of `service`, with a TTL check to flip. */
async function registerSharedGateway(
  service: string,
): Promise<{ check: (status: "pass" | "fail") => Promise<void>; deregister: () => Promise<void> }> {
  const agent = `http://${stack.consul}`;
  const port = Number(new URL(stack.addr).port);
  const id = `${service}-shared`;
  const put = async (path: string, body?: string): Promise<void> => {
    const resp = await fetch(`${agent}${path}`, { method: "PUT", body: body ?? null });
    assert.ok(resp.ok, `consul PUT ${path}: ${resp.status} ${await resp.text()}`);
  };
  await put(
    "/v1/agent/service/register",
    JSON.stringify({
      Name: service,
      ID: id,
      Address: "127.0.0.1",
      Port: port,
      Check: { CheckID: `${id}-ttl`, TTL: "87600h", Status: "passing" },
    }),
  );
  return {
    check: (status) => put(`/v1/agent/check/${status}/${id}-ttl`),
    deregister: () => put(`/v1/agent/service/deregister/${id}`),
  };
}

function replicaWarning(pattern: RegExp): Promise<Error> {
  return nextEvent<Error>(
    process,
    "warning",
    (w) => (w as NodeJS.ErrnoException).code === "LATCHKEY_REPLICAS" && pattern.test(w.message),
  );
}

describe("consul:// addresses", { timeout: 120_000 }, () => {
  test("the test gateway is a passing instance of service latchkey", async () => {
    const query = new PassingQuery(parse(`consul://${stack.consul}/latchkey`));
    const shared = new URL(stack.addr).host;
    const stop = new AbortController();
    try {
      await eventually(
        async () => (await query.fetch(0, stop.signal)).targets.includes(shared),
        `${shared} among Consul's passing instances of latchkey`,
      );
    } finally {
      query.close();
    }
  });

  test("a client reads through the replicas Consul lists, follows a new one and fails over to it", async () => {
    const service = serviceName("node-replicas");
    const first = await GatewayProcess.start({ service });
    const client = consulClient(stack.consul, service);
    let second: GatewayProcess | undefined;
    try {
      const secret = await client.secrets.get("myapp/database");
      assert.equal(secret.data["username"], "myapp");
      assert.equal(client.address, `127.0.0.1:${first.port}`);
      const prefix = unique("node-consul-failover");
      await consulKv.put(`${prefix}/k`, "1");
      const watch = await client.config.watch(`${prefix}/`);
      // A replica that starts after the client did: only the live list knows it.
      second = await GatewayProcess.start({ service });
      await first.stop(); // graceful: it deregisters, and its streams end
      const moved = nextEvent<ConfigEvent>(watch, "change", (e) => e.entries[`${prefix}/k`]?.text === "2");
      await consulKv.put(`${prefix}/k`, "2");
      await moved;
      assert.equal((await client.secrets.get("myapp/database")).data["username"], "myapp");
      assert.equal(client.address, `127.0.0.1:${second.port}`);
    } finally {
      await client.close();
      await first.stop();
      await second?.stop();
    }
  });

  test("a replica killed (still registered): calls continue on the other", async () => {
    const service = serviceName("node-kill");
    const gateways = [await GatewayProcess.start({ service }), await GatewayProcess.start({ service })];
    const query = new PassingQuery(parse(`consul://${stack.consul}/${service}`));
    const client = consulClient(stack.consul, service);
    try {
      const both = gateways.map((g) => `127.0.0.1:${g.port}`).sort();
      const stop = new AbortController();
      await eventually(
        async () => (await query.fetch(0, stop.signal)).targets.join(" ") === both.join(" "),
        "Consul listing both replicas as passing",
      );
      assert.equal((await client.secrets.get("myapp/database")).data["username"], "myapp");
      const used = gateways.find((g) => client.address === `127.0.0.1:${g.port}`);
      assert.ok(used, `the client uses a listed replica, not ${client.address}`);
      const other = gateways.find((g) => g !== used)!;
      await used.kill(); // its instance stays registered, passing until its check's TTL runs out
      assert.equal((await client.secrets.get("myapp/database")).data["username"], "myapp");
      assert.equal(client.address, `127.0.0.1:${other.port}`);
    } finally {
      query.close();
      await client.close();
      for (const gateway of gateways) await gateway.stop();
    }
  });

  test("Consul listing nothing, then out of reach: the last known replicas are kept", async () => {
    const service = serviceName("node-keep");
    const instance = await registerSharedGateway(service);
    const relay = await Relay.start(stack.consul);
    const client = consulClient(`127.0.0.1:${relay.port}`, service);
    try {
      assert.equal((await client.secrets.get("myapp/database")).data["username"], "myapp");
      const empty = replicaWarning(/Consul lists no passing instance of .*; keeping the last known replicas/);
      await instance.check("fail");
      await empty;
      assert.equal((await client.secrets.get("myapp/database")).data["username"], "myapp");
      const unreachable = replicaWarning(/finding gateway replicas in Consul failed: the Consul agent at 127\.0\.0\.1:\d+ .*cannot be reached/);
      await relay.cut();
      await unreachable;
      assert.equal((await client.secrets.get("myapp/database")).data["username"], "myapp");
      assert.equal(client.address, new URL(stack.addr).host);
    } finally {
      await client.close();
      await relay.cut();
      await instance.deregister();
    }
  });

  test("no passing instance: calls fail UNAVAILABLE and say what to check", async () => {
    const service = serviceName("node-none");
    const client = consulClient(stack.consul, service, { retryDeadlineMs: 500 });
    try {
      await assert.rejects(client.secrets.get("myapp/database"), (err: Error) => {
        assert.ok(err instanceof Unavailable);
        assert.match(err.message, new RegExp(`Consul lists no passing instance of service "${service}"`));
        assert.match(err.message, /registered in Consul \(replica\.register_service\)/);
        return true;
      });
    } finally {
      await client.close();
    }
  });

  test("Consul out of reach from the start: calls fail UNAVAILABLE naming the agent", async () => {
    const port = await freePort(); // nothing listens there
    const client = consulClient(`127.0.0.1:${port}`, "latchkey", { retryDeadlineMs: 500 });
    try {
      await assert.rejects(client.status(), (err: Error) => {
        assert.ok(err instanceof Unavailable);
        assert.match(err.message, new RegExp(`the Consul agent at 127\\.0\\.0\\.1:${port} .*cannot be reached: ECONNREFUSED`));
        return true;
      });
    } finally {
      await client.close();
    }
  });

  test("the background query keeps no process alive: a script that never closes its client exits", async () => {
    const service = serviceName("node-exit");
    const instance = await registerSharedGateway(service);
    const script = [
      'import { Client } from "@latchkey/client";',
      "const client = new Client({ insecure: true });",
      'console.log((await client.status()).identity ? "answered" : "no identity");',
    ].join("\n");
    const child = spawn(process.execPath, ["--input-type=module", "--eval", script], {
      cwd: PACKAGE_DIR,
      env: { PATH: process.env["PATH"], LATCHKEY_ADDR: `consul://${stack.consul}/${service}`, LATCHKEY_TOKEN: stack.token },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    try {
      const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
      assert.equal(signal, null, "the script did not exit on its own within 30 s");
      assert.equal(code, 0);
      assert.equal(out.trim(), "answered");
    } finally {
      clearTimeout(killer);
      await instance.deregister();
    }
  });

  test("close() ends a blocked Consul query", async () => {
    const service = serviceName("node-close");
    const instance = await registerSharedGateway(service);
    const client = consulClient(stack.consul, service);
    try {
      await client.status(); // the list is known; the next query blocks for up to 30 s
      const closed = client.close();
      const deadline = new Promise((_, reject) => setTimeout(() => reject(new Error("close() waited for Consul")), 10_000).unref());
      await Promise.race([closed, deadline]);
      await assert.rejects(client.status(), Cancelled);
    } finally {
      await instance.deregister();
    }
  });
});
