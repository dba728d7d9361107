/** A `pg` pool on a rotating credential (role with a 3 s TTL and a 6 s max TTL) through three
 * rotations, under a steady query load, with zero failed queries. */

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";

import type { DatabaseCredentials } from "@latchkey/client";
import { createPool } from "@latchkey/client/pg";

import { canLogin, eventually, stack, testClient } from "./helpers.js";

describe("pg pool on rotating credentials", () => {
  const client = testClient();
  after(() => client.close());

  test("three rotations, zero failed queries, old logins revoked once retired", { timeout: 90_000 }, async () => {
    const creds = await client.database.watch(stack.role("POOL"));
    const pool = createPool(creds, { ...stack.pg, max: 4 });
    const rotations: Array<{ previous: DatabaseCredentials; next: DatabaseCredentials; staleLeft: number }> = [];
    creds.on("rotate", (next, previous) => {
      if (previous !== null) rotations.push({ previous, next, staleLeft: -1 });
    });
    // Registered after the pool's listener: runs once the pool has retired the old connections.
    creds.on("rotate", (_next, previous) => {
      const last = rotations.at(-1);
      if (last !== undefined && previous !== null) last.staleLeft = pool.connections(previous.username);
    });
    const failures: string[] = [];
    const usersSeen = new Set<string>();
    let ok = 0;
    let running = true;
    const worker = async (n: number): Promise<void> => {
      while (running) {
        try {
          if (n % 2 === 0) {
            const { rows } = await pool.query<{ n: string; who: string }>("SELECT count(*) AS n, current_user AS who FROM items");
            usersSeen.add(rows[0]!.who);
          } else {
            // Hold a connection across several statements, so rotations find busy connections.
            const conn = await pool.connect();
            try {
              await conn.query("BEGIN");
              await conn.query("SELECT count(*) FROM items");
              await delay(50); // the transaction stays open a while (load shape, not a wait)
              await conn.query("SELECT count(*) FROM items");
              await conn.query("COMMIT");
            } finally {
              conn.release();
            }
          }
          ok += 1;
        } catch (err) {
          failures.push(err instanceof Error ? err.message : String(err));
        }
        await delay(10); // pacing of the load loop
      }
    };
    const workers = [0, 1, 2, 3].map(worker);
    try {
      await eventually(() => rotations.length >= 3, "three rotations", 60_000);
    } finally {
      running = false;
      await Promise.all(workers);
    }
    assert.deepEqual(failures, []);
    assert.ok(ok > 0);
    for (const { previous, next, staleLeft } of rotations.slice(0, 3)) {
      assert.notEqual(previous.username, next.username);
      assert.equal(staleLeft, 0, "connections with the old credential were retired before the ack");
      // Acknowledged after the pool let go of it: the gateway revokes the old login.
      await eventually(async () => !(await canLogin(previous.username, previous.password)), "the old login to be revoked");
    }
    assert.ok(usersSeen.size >= 3, `queries ran as ${usersSeen.size} different users`);
    const { rows } = await pool.query<{ who: string }>("SELECT current_user AS who");
    assert.equal(rows[0]!.who, creds.current.username);
    await pool.end();
    await creds.close();
  });
});
