/** A gateway process of this file's own, serving mTLS, with a long rotation grace (120 s), so that
 * only an acknowledgement can revoke a rotated credential early. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { Client, type DatabaseCredentials, Unavailable } from "@latchkey/client";

import { canLogin, eventually, GatewayProcess, stack } from "./helpers.js";

describe("over mTLS", { timeout: 120_000 }, () => {
  let gateway: GatewayProcess;
  before(async () => {
    gateway = await GatewayProcess.start({ mtls: true, graceSeconds: 120 });
  });
  after(() => gateway?.stop());

  test("the client certificate is the identity", async () => {
    const client = new Client(gateway.clientOptions());
    try {
      const status = await client.status();
      assert.deepEqual([status.identity, status.authMethod], ["app", "mtls"]);
      assert.equal((await client.secrets.get("myapp/database")).data["username"], "myapp");
    } finally {
      await client.close();
    }
  });

  test("LATCHKEY_* variables configure TLS; a bare host:port is TLS", async () => {
    const tls = stack.tlsDir;
    const client = new Client({
      env: {
        LATCHKEY_ADDR: `127.0.0.1:${gateway.port}`,
        LATCHKEY_CACERT: join(tls, "ca.crt"),
        LATCHKEY_CLIENT_CERT: join(tls, "client-app.crt"),
        LATCHKEY_CLIENT_KEY: join(tls, "client-app.key"),
      },
    });
    try {
      assert.equal((await client.status()).authMethod, "mtls");
    } finally {
      await client.close();
    }
  });

  test("without a client certificate, or in plaintext, the gateway cannot be reached", async () => {
    const noCert = new Client({ addr: gateway.addr, cacert: join(stack.tlsDir, "ca.crt"), retryDeadlineMs: 300, env: {} });
    const plaintext = new Client({ addr: `http://127.0.0.1:${gateway.port}`, token: stack.token, retryDeadlineMs: 300, env: {} });
    try {
      await assert.rejects(noCert.status(), Unavailable);
      await assert.rejects(plaintext.status(), Unavailable);
    } finally {
      await noCert.close();
      await plaintext.close();
    }
  });

  test("a rotation is acknowledged only after the async rotate listeners settled", async () => {
    const client = new Client(gateway.clientOptions());
    const creds = await client.database.watch(stack.role("ACK"));
    const order: string[] = [];
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let rotated: { previous: DatabaseCredentials; next: DatabaseCredentials } | null = null;
    creds.once("rotate", async (next, previous) => {
      order.push("listener started");
      rotated = { previous: previous!, next };
      await released; // the application takes its time, e.g. to drain a pool
      order.push("listener done");
    });
    creds.once("ack", () => order.push("acknowledged"));
    const revocations: Array<[string, string]> = [];
    creds.on("revoke", (leaseId, reason) => revocations.push([leaseId, reason]));
    try {
      await eventually(() => rotated !== null, "a rotation", 30_000);
      const { previous, next } = rotated!;
      assert.equal(creds.current.leaseId, next.leaseId); // switched before the listeners ran
      // Not acknowledged yet, and the grace is 120 s: the old login still works.
      assert.ok(await canLogin(previous.username, previous.password));
      assert.deepEqual(order, ["listener started"]);
      release();
      await eventually(() => order.length === 3, "the acknowledgement");
      assert.deepEqual(order, ["listener started", "listener done", "acknowledged"]);
      // The gateway revoked the old lease because it was acknowledged: the grace runs 120 s, and
      // a lease that had reached its max TTL instead would be reported as "the lease expired".
      await eventually(() => revocations.some(([id]) => id === previous.leaseId), "the old lease's revocation");
      assert.deepEqual(
        revocations.find(([id]) => id === previous.leaseId),
        [previous.leaseId, "rotated"],
      );
      assert.equal(await canLogin(previous.username, previous.password), false);
      assert.ok(await canLogin(next.username, next.password));
    } finally {
      release();
      await client.close();
    }
  });
});
