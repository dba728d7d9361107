/**
 * Test helpers: where the real stack is (from tests/node/test_node_sdk.py), Consul writes, gateway
 * processes of a test's own, and waiting on conditions and events (never a fixed sleep).
 */

import { type ChildProcess, spawn } from "node:child_process";
import { once, type EventEmitter } from "node:events";
import { openSync, readFileSync, writeFileSync, closeSync, mkdtempSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";

import pg from "pg";

import { Client, type ClientOptions } from "@latchkey/client";

const HOW =
  "the Node SDK tests run against the real stack that tests/node/test_node_sdk.py starts: " +
  "run `make test`, or `.venv/bin/pytest tests/node/test_node_sdk.py` from the repository root";

function need(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: ${HOW}`);
  return value;
}

/** Where the shared gateway, Consul and PostgreSQL are, and what was seeded. */
export const stack = {
  get addr(): string {
    return need("LATCHKEY_TEST_ADDR");
  },
  get token(): string {
    return need("LATCHKEY_TEST_TOKEN");
  },
  get consul(): string {
    return need("LATCHKEY_TEST_CONSUL");
  },
  get pg(): { host: string; port: number; database: string } {
    return {
      host: need("LATCHKEY_TEST_PG_HOST"),
      port: Number(need("LATCHKEY_TEST_PG_PORT")),
      database: need("LATCHKEY_TEST_PG_DATABASE"),
    };
  },
  /** POOL and ACK rotate every few seconds; LONG leases last minutes. */
  role(which: "POOL" | "ACK" | "LONG"): string {
    return need(`LATCHKEY_TEST_ROLE_${which}`);
  },
  get tlsDir(): string {
    return need("LATCHKEY_TEST_TLS_DIR");
  },
  get workdir(): string {
    return need("LATCHKEY_TEST_WORKDIR");
  },
  /** Vault's address and root token (to write secret versions; the gateway only reads). */
  get vault(): { addr: string; token: string } {
    return { addr: need("LATCHKEY_TEST_VAULT_ADDR"), token: need("LATCHKEY_TEST_VAULT_TOKEN") };
  },
};

/** A client of the shared gateway (plaintext, token auth). */
export function testClient(options: ClientOptions = {}): Client {
  return new Client({ addr: stack.addr, token: stack.token, env: {}, ...options });
}

/** A key unique to this test run. */
export function unique(prefix: string): string {
  return `${prefix}/${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

async function consul(method: string, path: string, body?: string): Promise<string> {
  const resp = await fetch(`http://${stack.consul}${path}`, { method, body: body ?? null });
  const text = await resp.text();
  if (!resp.ok) throw new Error(`consul ${method} ${path}: ${resp.status} ${text}`);
  return text;
}

export const consulKv = {
  put: (key: string, value: string): Promise<string> => consul("PUT", `/v1/kv/${key}`, value),
  delete: (key: string): Promise<string> => consul("DELETE", `/v1/kv/${key}`),
};

/** Write a new version of a KV v2 secret (Vault's HTTP API, as `bao kv put` does); resolves
 * with the version written. */
export async function putSecret(path: string, data: Record<string, unknown>, mount = "secret"): Promise<number> {
  const { addr, token } = stack.vault;
  const resp = await fetch(`${addr.replace(/\/+$/, "")}/v1/${mount}/data/${path}`, {
    method: "POST",
    headers: { "X-Vault-Token": token, "Content-Type": "application/json" },
    body: JSON.stringify({ data }),
  });
  const text = await resp.text();
  if (!resp.ok) throw new Error(`vault write ${mount}/data/${path}: ${resp.status} ${text}`);
  return (JSON.parse(text) as { data: { version: number } }).data.version;
}

/** Register a service instance with a TTL check in the given state. */
export async function registerService(service: string, n: number, status: "passing" | "critical"): Promise<string> {
  const id = `${service}-${n}`;
  await consul(
    "PUT",
    "/v1/agent/service/register",
    JSON.stringify({
      Name: service,
      ID: id,
      Address: "127.0.0.1",
      Port: 9000 + n,
      Tags: ["node"],
      Check: { CheckID: `${id}-ttl`, TTL: "87600h", Status: status },
    }),
  );
  return id;
}

export async function setHealth(id: string, status: "pass" | "fail"): Promise<void> {
  await consul("PUT", `/v1/agent/check/${status}/${id}-ttl`);
}

/** Poll `check` until it is true; fail after `withinMs`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  withinMs = 20_000,
): Promise<void> {
  const deadline = performance.now() + withinMs;
  let wait = 20;
  for (;;) {
    if (await check()) return;
    if (performance.now() > deadline) throw new Error(`timed out after ${withinMs / 1000}s waiting for ${what}`);
    await delay(wait); // polling interval of an observable condition
    wait = Math.min(wait * 2, 250);
  }
}

/** The next `event` from `emitter` whose arguments satisfy `predicate`. */
export async function nextEvent<T = unknown>(
  emitter: EventEmitter,
  event: string,
  predicate: (value: T) => boolean = () => true,
  withinMs = 30_000,
): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), withinMs); // ref'd: keeps the test alive
  try {
    for (;;) {
      const [value] = (await once(emitter, event, { signal: controller.signal })) as [T];
      if (predicate(value)) return value;
    }
  } catch (err) {
    if (controller.signal.aborted) throw new Error(`no matching ${event} event within ${withinMs / 1000}s`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Whether PostgreSQL accepts this login (a revoked credential does not). */
export async function canLogin(user: string, password: string): Promise<boolean> {
  const client = new pg.Client({ ...stack.pg, user, password, connectionTimeoutMillis: 5_000 });
  client.on("error", () => undefined);
  try {
    await client.connect();
    await client.query("SELECT 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** A free loopback port. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/** What a gateway process of a test's own serves. */
export interface GatewayOptions {
  /** Serve mTLS (server certificate and client CA from LATCHKEY_TEST_TLS_DIR). */
  mtls?: boolean;
  /** Seconds before an unacknowledged rotation's old lease is revoked anyway. */
  graceSeconds?: number;
  /** Where the gateway looks for Vault (e.g. a port where nothing listens). */
  vaultAddr?: string;
  /** Where the gateway looks for Consul (e.g. a `Relay` to it). */
  consulAddr?: string;
  /** The Consul service it registers as (default `latchkey`). */
  service?: string;
}

/** A `latchkey-server serve` process on a fixed port (so it can be restarted on it). */
export class GatewayProcess {
  private child: ChildProcess | null = null;
  readonly configFile: string;
  readonly logFile: string;

  private constructor(
    readonly port: number,
    private readonly options: GatewayOptions,
  ) {
    const dir = mkdtempSync(join(stack.workdir, "gateway-"));
    this.configFile = join(dir, "gateway.yaml");
    this.logFile = join(dir, "gateway.log");
    const config = JSON.parse(readFileSync(need("LATCHKEY_TEST_GATEWAY_CONFIG"), "utf8"));
    config.listen = `127.0.0.1:${port}`;
    config.audit = { sink: join(dir, "audit.log") };
    config.replica = { ...config.replica, id: `node-gw-${port}` }; // replicas on one Consul need their own ids
    if (options.graceSeconds !== undefined) config.leases.grace = options.graceSeconds;
    if (options.vaultAddr !== undefined) config.vault.addr = options.vaultAddr;
    if (options.consulAddr !== undefined) config.consul.addr = options.consulAddr;
    if (options.service !== undefined) config.replica.service = options.service;
    if (options.mtls) {
      const tls = stack.tlsDir;
      config.insecure = false;
      config.tls = {
        cert_file: join(tls, "server.crt"),
        key_file: join(tls, "server.key"),
        client_ca_file: join(tls, "ca.crt"),
        require_client_cert: true,
      };
    }
    writeFileSync(this.configFile, JSON.stringify(config, null, 2)); // JSON is YAML
  }

  static async start(options: GatewayOptions = {}): Promise<GatewayProcess> {
    const gateway = new GatewayProcess(await freePort(), options);
    await gateway.start();
    return gateway;
  }

  /** The address a client dials. */
  get addr(): string {
    return `${this.options.mtls ? "https" : "http"}://127.0.0.1:${this.port}`;
  }

  /** Client options for this gateway (mTLS: the `app` identity's certificate). */
  clientOptions(): ClientOptions {
    if (!this.options.mtls) return { addr: this.addr, token: stack.token, env: {} };
    const tls = stack.tlsDir;
    return {
      addr: this.addr,
      cacert: join(tls, "ca.crt"),
      clientCert: join(tls, "client-app.crt"),
      clientKey: join(tls, "client-app.key"),
      env: {},
    };
  }

  /** Start the process and wait until it answers `Status`. */
  async start(): Promise<void> {
    const [command, ...args] = JSON.parse(need("LATCHKEY_TEST_SERVE")) as string[];
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("LATCHKEY_")));
    const log = openSync(this.logFile, "a");
    this.child = spawn(command!, [...args, "--config", this.configFile], { env, stdio: ["ignore", log, log] });
    closeSync(log);
    const probe = new Client({ ...this.clientOptions(), timeoutMs: 1_000, retryDeadlineMs: 1_000 });
    try {
      await eventually(
        async () => {
          if (this.child?.exitCode !== null) throw new Error(`the gateway exited: ${this.logTail()}`);
          return probe.status().then(
            () => true,
            () => false,
          );
        },
        "the gateway process to serve",
        60_000,
      );
    } finally {
      await probe.close();
    }
  }

  /** SIGTERM (graceful: it revokes its leases) and wait for the exit. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child === null || child.exitCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    await exited;
    clearTimeout(killer);
  }

  /** SIGKILL (a crash: nothing deregistered or revoked) and wait for the exit. */
  async kill(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child === null || child.exitCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGKILL");
    await exited;
  }

  logTail(): string {
    return readFileSync(this.logFile, "utf8").split("\n").slice(-30).join("\n");
  }
}

/** A TCP relay (to the shared gateway, or to Consul) that can drop every connection and refuse
 * new ones: a network partition made with real sockets. */
export class Relay {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(target: string): Promise<Relay> {
    const [host, port] = target.replace(/^https?:\/\//, "").split(":");
    const relay = new Relay(0, { host: host!, port: Number(port) });
    await relay.listen();
    return relay;
  }

  async listen(): Promise<void> {
    this.server = createServer((inbound) => {
      const outbound = createConnection(this.target);
      for (const socket of [inbound, outbound]) {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => socket.destroy());
      }
      inbound.pipe(outbound).pipe(inbound);
    });
    this.server.listen(this.port, "127.0.0.1");
    await once(this.server, "listening");
    (this as { port: number }).port = (this.server.address() as { port: number }).port;
  }

  /** Drop every connection and stop listening (clients see the gateway as down). */
  async cut(): Promise<void> {
    const closed = new Promise((resolve) => this.server?.close(resolve));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}
