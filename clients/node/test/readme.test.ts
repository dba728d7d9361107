/** Every `js` block of clients/node/README.md runs as written, against the shared gateway (as
 * after `source .latchkey/dev.env`), and prints what it should. */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";

import { consulKv, eventually, putSecret, stack, testClient } from "./helpers.js";

const README = fileURLToPath(new URL("../../README.md", import.meta.url));
const SNIPPETS = fileURLToPath(new URL("../readme/", import.meta.url)); // inside the package
const blocks = [...readFileSync(README, "utf8").matchAll(/```js\n(.*?)```/gs)].map((m) => m[1]!);

function block(marker: string): string {
  const found = blocks.filter((b) => b.includes(marker));
  assert.equal(found.length, 1, `one README block contains ${marker}`);
  return found[0]!;
}

const running = new Set<ReturnType<typeof spawn>>();
after(() => {
  for (const child of running) child.kill("SIGKILL"); // a failed test leaves none behind
});

/** A snippet as a program of its own, with the environment `make dev`'s dev.env would give. */
function start(code: string, name: string) {
  mkdirSync(SNIPPETS, { recursive: true });
  const file = `${SNIPPETS}${name}.mjs`;
  writeFileSync(file, code);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("LATCHKEY_")));
  const child = spawn(process.execPath, [file], {
    env: {
      ...env,
      LATCHKEY_ADDR: stack.addr,
      LATCHKEY_TOKEN: stack.token,
      PGHOST: stack.pg.host,
      PGPORT: String(stack.pg.port),
      PGDATABASE: stack.pg.database,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  child.once("exit", () => running.delete(child));
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = once(child, "exit").then(([code]) => code as number | null);
  return {
    child,
    output: () => stdout,
    errors: () => stderr,
    /** Resolves once stdout matches `pattern` (fails if the program exits first). */
    async waitFor(pattern: RegExp, withinMs = 20_000): Promise<void> {
      const deadline = setTimeout(() => child.kill("SIGKILL"), withinMs);
      try {
        while (!pattern.test(stdout)) {
          const exit = await Promise.race([once(child.stdout, "data").then(() => null), exited]);
          if (exit !== null && !pattern.test(stdout)) {
            throw new Error(`${name} ended (${exit}) before printing ${pattern}:\n${stdout}\n${stderr}`);
          }
        }
      } finally {
        clearTimeout(deadline);
      }
    },
    async run(withinMs = 30_000): Promise<string> {
      const deadline = setTimeout(() => child.kill("SIGKILL"), withinMs);
      const code = await exited;
      clearTimeout(deadline);
      assert.equal(code, 0, `${name} failed:\n${stdout}\n${stderr}`);
      return stdout;
    },
    exited,
  };
}

describe("README examples", { timeout: 90_000 }, () => {
  test("every js block is one of the programs below", () => {
    const markers = ['secrets.get("myapp/database")', 'services.pick("web")', 'config.watch("config/myapp/")'];
    markers.push("createPool(creds", 'config.bind("config/myapp/"', "for await (const event of watch)");
    markers.push('secrets.watch("myapp/database")', 'services.register("myapp"', "config.bind(Settings,");
    assert.equal(blocks.length, markers.length, "a new js block in the README needs a test here");
    for (const marker of markers) block(marker);
  });

  test("read a secret", async () => {
    const out = await start(block('secrets.get("myapp/database")'), "secret").run();
    assert.match(out, /database user myapp, password of 20 characters, version \d+/);
    assert.ok(!out.includes("node-readme-password"));
  });

  test("pick a healthy instance", async () => {
    const out = await start(block('services.pick("web")'), "pick").run();
    assert.match(out, /^calling http:\/\/127\.0\.0\.1:808[12]\/$/m); // web-3 (8083) is critical
  });

  test("watch configuration", async () => {
    const program = start(block('config.watch("config/myapp/")'), "watch");
    await program.waitFor(/^config: config\/myapp\/log_level = info$/m);
    await program.waitFor(/^config: config\/myapp\/max_connections = 10$/m);
    await consulKv.put("config/myapp/log_level", "debug");
    await program.waitFor(/^changed: config\/myapp\/log_level = debug$/m);
    await consulKv.put("config/myapp/log_level", "info");
    await program.waitFor(/^changed: config\/myapp\/log_level = info$/m);
    program.child.kill("SIGINT"); // the program closes its client and ends
    assert.equal(await program.exited, 0, program.errors());
  });

  test("a pg pool on rotating credentials", async () => {
    const out = await start(block("createPool(creds"), "pool").run();
    assert.match(out, /^items: 3$/m);
  });

  test("typed configuration", async () => {
    const out = await start(block('config.bind("config/myapp/"'), "bind").run();
    assert.match(out, /^max_connections: 10$/m);
  });

  test("a watch as an async iterator with an AbortSignal", async () => {
    const out = await start(block("for await (const event of watch)"), "iterate").run();
    assert.match(out, /^web: 127\.0\.0\.1:808[12] 127\.0\.0\.1:808[12]$/m);
  });
  test("follow a secret's new versions", async () => {
    const program = start(block('secrets.watch("myapp/database")'), "secret-watch");
    await program.waitFor(/^watching version \d+$/m);
    const before = Number(/^watching version (\d+)$/m.exec(program.output())![1]);
    // The same data as seeded (other tests read it), as a new version.
    const after = await putSecret("myapp/database", { username: "myapp", password: "node-readme-password" });
    await program.waitFor(new RegExp(`^version ${before} -> ${after}: reconnect with the new password$`, "m"));
    assert.equal(await program.exited, 0, program.errors()); // the listener closed the client
    assert.ok(!program.output().includes("node-readme-password"));
  });

  test("register this instance", async () => {
    const client = testClient();
    const program = start(block('services.register("myapp"'), "register");
    try {
      await program.waitFor(/^registered myapp-\S+$/m);
      const id = /^registered (\S+)$/m.exec(program.output())![1]!;
      const listed = async (): Promise<boolean> =>
        client.services.healthy("myapp").then(
          (instances) => instances.some((i) => i.id === id && i.port === 3000 && i.tags.includes("v1")),
          () => false, // NotFound: Consul knows no instance of it
        );
      await eventually(listed, "the registered instance in services.healthy");
      program.child.kill("SIGINT"); // the program closes its client: the instance is deregistered
      assert.equal(await program.exited, 0, program.errors());
      await eventually(async () => !(await listed()), "the instance to be gone");
    } finally {
      await client.close();
    }
  });

  test("layered typed configuration", async () => {
    const keys = {
      "config/myapp/database/host": "db.internal",
      "config/myapp/database/port": "5432",
      "config/myapp/env/production/database/host": "db.prod.internal",
    };
    for (const [key, value] of Object.entries(keys)) await consulKv.put(key, value);
    try {
      const out = await start(block("config.bind(Settings,"), "bind-layers").run();
      assert.match(out, /^database db\.prod\.internal:5432, log level (info|debug)$/m);
    } finally {
      for (const key of Object.keys(keys)) await consulKv.delete(key);
    }
  });
});
