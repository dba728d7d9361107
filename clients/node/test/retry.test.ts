/** UNAVAILABLE from the real gateway (its Vault is a port where nothing listens): retried with
 * backoff within the deadline, and the gateway's `retry-after` trailer reaches the error. */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Client, Unavailable } from "@latchkey/client";

import { freePort, GatewayProcess } from "./helpers.js";

describe("a gateway whose Vault is down", { timeout: 60_000 }, () => {
  let gateway: GatewayProcess;
  before(async () => {
    gateway = await GatewayProcess.start({ vaultAddr: `http://127.0.0.1:${await freePort()}` });
  });
  after(() => gateway?.stop());

  test("answers UNAVAILABLE with retry-after; the SDK retries, then reports it", async () => {
    const client = new Client({ ...gateway.clientOptions(), retryDeadlineMs: 2_500 });
    try {
      assert.equal((await client.status()).identity, "app"); // the gateway itself is up
      const err = await client.secrets.get("myapp/database").then(
        () => assert.fail("expected Unavailable"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof Unavailable);
      assert.equal(err.code, "UNAVAILABLE");
      assert.equal(err.retryAfterMs, 1_000); // the gateway's `retry-after: 1`
      assert.match(err.message, /Vault/);
    } finally {
      await client.close();
    }
  });
});
