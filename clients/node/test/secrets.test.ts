/** Secrets, one-shot credentials, leases and errors against the shared gateway. */

import assert from "node:assert/strict";
import { inspect } from "node:util";
import { after, describe, test } from "node:test";

import { Cancelled, Client, NotFound, type Secret, Unauthenticated, Unavailable } from "@latchkey/client";

import { canLogin, eventually, freePort, nextEvent, putSecret, Relay, stack, testClient, unique } from "./helpers.js";

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

  test("secrets.watch holds the latest version and emits each new one", async () => {
    const path = unique("node-watched");
    const first = await putSecret(path, { api_key: "watched-secret-one" });
    const watched = await client.secrets.watch(path);
    try {
      assert.equal(watched.current.version, first);
      assert.equal(watched.current.data["api_key"], "watched-secret-one");
      assert.equal(watched.mount, "secret");
      const changed = nextEvent<Secret>(watched, "change");
      const second = await putSecret(path, { api_key: "watched-secret-two" });
      const secret = await changed;
      assert.equal(secret.version, second);
      assert.equal(secret.data["api_key"], "watched-secret-two");
      assert.equal(watched.current, secret);
      assert.equal(watched.changes, 1);
      assert.ok(!inspect(watched).includes("watched-secret-two"));
    } finally {
      await watched.close();
    }
    assert.equal(watched.closed, true);
  });

  test("secrets.watch of a missing secret rejects with NotFound", async () => {
    await assert.rejects(client.secrets.watch(unique("node-missing")), NotFound);
  });

  test("a secret watch reconnects and reports the version written while it was cut off, once", async () => {
    const path = unique("node-watched-cut");
    await putSecret(path, { token: "before-cut" });
    const relay = await Relay.start(stack.addr);
    const cut = new Client({ addr: `http://127.0.0.1:${relay.port}`, token: stack.token, env: {} });
    try {
      const watched = await cut.secrets.watch(path, { mount: "secret" });
      const versions: number[] = [];
      watched.on("change", (secret) => versions.push(secret.version));
      const down = nextEvent(watched, "unreachable");
      await relay.cut();
      await down;
      const written = await putSecret(path, { token: "during-cut" });
      const back = nextEvent(watched, "reconnect");
      const changed = nextEvent<Secret>(watched, "change");
      await relay.listen(); // the same port again
      await back;
      assert.equal((await changed).version, written);
      assert.equal(watched.current.data["token"], "during-cut");
      // Cut off again with nothing written: the new stream starts with the version the watch
      // has, which is not reported again; the next version written is (in stream order).
      const downAgain = nextEvent(watched, "unreachable");
      await relay.cut();
      await downAgain;
      const backAgain = nextEvent(watched, "reconnect");
      await relay.listen();
      await backAgain;
      const next = nextEvent<Secret>(watched, "change");
      const last = await putSecret(path, { token: "after-cut" });
      assert.equal((await next).version, last);
      assert.deepEqual(versions, [written, last]);
    } finally {
      await cut.close();
      await relay.cut();
    }
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
