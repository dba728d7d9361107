/** Secrets, one-shot credentials, leases and errors against the shared gateway. */

import assert from "node:assert/strict";
import { inspect } from "node:util";
import { after, describe, test } from "node:test";

import { Cancelled, Client, NotFound, Unauthenticated, Unavailable } from "@latchkey/client";

import { canLogin, eventually, freePort, stack, testClient } from "./helpers.js";

describe("secrets and credentials", () => {
  const client = testClient();
  after(() => client.close());

  test("status names the caller and the upstreams", async () => {
    const status = await client.status();
    assert.equal(status.identity, "app");
    assert.equal(status.authMethod, "token");
    assert.deepEqual(status.upstreams.map((u) => u.name).sort(), ["consul", "vault"]);
    assert.equal(status.address, stack.addr.replace("http://", ""));
  });

  test("secrets.get reads KV v2 and keeps the data out of logs", async () => {
    const secret = await client.secrets.get("myapp/database");
    assert.equal(secret.data["username"], "myapp");
    assert.equal(secret.data["password"], "node-readme-password");
    assert.ok(secret.version >= 1);
    assert.ok(!inspect(secret).includes("node-readme-password"));
    assert.ok(!JSON.stringify(secret).includes("node-readme-password"));
  });

  test("a missing secret is NotFound with the gateway's message", async () => {
    const err = await client.secrets.get("myapp/does-not-exist").then(
      () => assert.fail("expected NotFound"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof NotFound);
    assert.equal(err.code, "NOT_FOUND");
    assert.match(err.message, /does-not-exist|not found/i);
  });

  test("database.credentials logs in and hides the password; leases lists and revokes", async () => {
    const creds = await client.database.credentials(stack.role("LONG"));
    assert.match(creds.username, /\S/);
    assert.ok(await canLogin(creds.username, creds.password));
    assert.ok(!inspect(creds).includes(creds.password));
    const leases = await client.leases.list({ role: stack.role("LONG") });
    assert.ok(leases.some((l) => l.leaseId === creds.leaseId && l.username === creds.username));
    assert.equal(await client.leases.revoke(creds.leaseId, { force: true }), true);
    assert.equal(await canLogin(creds.username, creds.password), false);
  });

  test("closing a credential watch releases its lease", async () => {
    const creds = await client.database.watch(stack.role("LONG"));
    const { username, password } = creds.current; // a 60 s lease the gateway keeps renewing
    assert.ok(await canLogin(username, password));
    await creds.close();
    assert.equal(creds.closed, true);
    await eventually(async () => !(await canLogin(username, password)), "the released lease to be revoked");
  });

  test("a wrong token is Unauthenticated (not retried)", async () => {
    const bad = new Client({ addr: stack.addr, token: "not-a-token", env: {} });
    try {
      await assert.rejects(bad.status(), Unauthenticated);
    } finally {
      await bad.close();
    }
  });

  test("an unreachable gateway is Unavailable after the retry deadline; a second address takes over", async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const alone = new Client({ addr: dead, token: stack.token, retryDeadlineMs: 300, env: {} });
    try {
      await assert.rejects(alone.status(), Unavailable);
    } finally {
      await alone.close();
    }
    const pair = new Client({ addr: `${dead},${stack.addr}`, token: stack.token, env: {} });
    try {
      const status = await pair.status(); // fails over to the second address
      assert.equal(`http://${status.address}`, stack.addr);
      assert.equal(`http://${pair.address}`, stack.addr);
    } finally {
      await pair.close();
    }
  });

  test("an aborted call rejects with Cancelled", async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const retrying = new Client({ addr: dead, token: stack.token, retryDeadlineMs: 60_000, env: {} });
    try {
      const controller = new AbortController();
      const call = retrying.status({ signal: controller.signal });
      controller.abort();
      await assert.rejects(call, Cancelled);
    } finally {
      await retrying.close();
    }
  });
});
