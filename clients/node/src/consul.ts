/**
 * Gateway replicas from Consul: `consul://AGENT/SERVICE` addresses and the health query.
 *
 * `LATCHKEY_ADDR=consul://127.0.0.1:8500/latchkey` asks the Consul agent at `127.0.0.1:8500`
 * (any agent's HTTP API) for the passing instances of service `latchkey`, which every gateway
 * replica registers; they are the client's failover list, kept current by a blocking query
 * (`replicas.ts` runs it). Query parameters: `scheme=https` (the agent's API over TLS, verified
 * with Node's roots), `dc=NAME`, `tag=TAG`. The agent's ACL token comes from
 * `LATCHKEY_CONSUL_TOKEN` (never from the address, which ends up in logs and messages).
 *
 * One HTTP GET at a time over `node:http`/`node:https` (no dependency). The background query's
 * socket is unref'd, so that it never keeps a process alive on its own, and the client's
 * `close()` aborts a query in flight at once.
 */

import * as http from "node:http";
import * as https from "node:https";

import { ConfigurationError, Unavailable } from "./errors.js";

export const SCHEME = "consul://";
/** Blocking-query wait, milliseconds (the agent adds up to 1/16 of jitter). */
export const WAIT_MS = 30_000;

const RETRY_AFTER_MS = 1_000;

/** Where to find the gateway's replicas: a service in Consul. */
export class ConsulReplicas {
  /** ACL token (`LATCHKEY_CONSUL_TOKEN`); not enumerable, so logs of the object leave it out. */
  declare readonly token: string | undefined;

  constructor(
    /** `host:port` of a Consul agent's HTTP API. */
    readonly agent: string,
    /** The service the replicas register as. */
    readonly service = "latchkey",
    /** Whether the agent's API is asked over TLS. */
    readonly https = false,
    /** Consul datacenter (empty: the agent's own). */
    readonly datacenter = "",
    /** Only instances with this tag (empty: all). */
    readonly tag = "",
    token?: string,
  ) {
    Object.defineProperty(this, "token", { value: token || undefined, enumerable: false, writable: false });
  }

  /** `consul://AGENT/SERVICE` (no query options, no token). */
  describe(): string {
    return `${SCHEME}${this.agent}/${this.service}`;
  }
}

/** Whether an address is a `consul://` one. */
export function isConsul(addr: string): boolean {
  return addr.trim().startsWith(SCHEME);
}

/** `consul://HOST[:PORT]/SERVICE[?scheme=https&dc=DC&tag=TAG]` (port 8500 by default). */
export function parse(addr: string, token?: string): ConsulReplicas {
  const text = addr.trim();
  const notConsul = (): ConfigurationError =>
    new ConfigurationError(
      `${JSON.stringify(text)} is not a Consul address: write consul://AGENT/SERVICE, e.g. ` +
        "consul://127.0.0.1:8500/latchkey (AGENT is a Consul agent's HTTP host:port)",
    );
  let url: URL;
  let service: string;
  try {
    url = new URL(text);
    service = decodeURIComponent(url.pathname.replace(/^\/+|\/+$/g, ""));
  } catch {
    throw notConsul();
  }
  if (!url.host || !service || service.includes("/")) throw notConsul();
  if (url.username || url.password) {
    throw new ConfigurationError(
      "put no credentials in a consul:// address: the Consul token goes in LATCHKEY_CONSUL_TOKEN",
    );
  }
  const query = new Map(url.searchParams); // the last value of a repeated parameter wins
  const unknown = [...query.keys()].filter((k) => !["scheme", "dc", "tag"].includes(k)).sort();
  if (unknown.length > 0) {
    throw new ConfigurationError(
      `unknown parameter(s) ${JSON.stringify(unknown)} in ${JSON.stringify(text)}: consul:// addresses take ` +
        "scheme (http or https), dc and tag",
    );
  }
  const scheme = query.get("scheme") ?? "http";
  if (scheme !== "http" && scheme !== "https") {
    throw new ConfigurationError(`scheme=${JSON.stringify(scheme)} in ${JSON.stringify(text)}: use http or https`);
  }
  // WHATWG URLs drop a port only when it is the scheme's default, and consul: has none.
  const agent = url.port ? url.host : `${url.host}:8500`;
  return new ConsulReplicas(agent, service, scheme === "https", query.get("dc") ?? "", query.get("tag") ?? "", token);
}

function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

/**
 * `host:port` of each instance in a `/v1/health/service` answer (the service's address, else
 * its node's; IPv6 in brackets), sorted and without duplicates. Entries without an address or
 * port are skipped.
 */
export function targets(body: unknown): string[] {
  if (!Array.isArray(body)) {
    throw new Unavailable("the Consul agent sent an unexpected health answer", { retryAfterMs: RETRY_AFTER_MS });
  }
  const out = new Set<string>();
  for (const item of body) {
    const service = record(record(item)?.["Service"]);
    if (service === undefined) continue;
    const nodeAddress = record(record(item)?.["Node"])?.["Address"];
    const host = service["Address"] || nodeAddress;
    const port = service["Port"];
    if (typeof host !== "string" || !host || !Number.isInteger(port) || (port as number) <= 0) continue;
    out.add(host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`);
  }
  return [...out].sort();
}

/** Options of one health query. */
export interface QueryOptions {
  /** How long Consul may block, milliseconds (default `WAIT_MS`). */
  readonly waitMs?: number;
  /** Unref the socket: the query alone does not keep the process alive (the replica list's
   * background refresh; a call waiting for it keeps the process alive by itself). */
  readonly background?: boolean;
}

/** One answer of the health query. */
export interface PassingAnswer {
  /** Consul's `X-Consul-Index`: the next query blocks until it moves past it. */
  readonly index: number;
  /** `host:port` of each passing instance, sorted. */
  readonly targets: string[];
}

/** The blocking health query for one service (one request at a time). */
export class PassingQuery {
  private readonly agent: http.Agent;

  constructor(readonly replicas: ConsulReplicas) {
    const options = { keepAlive: true, maxSockets: 1 };
    this.agent = replicas.https ? new https.Agent(options) : new http.Agent(options);
  }

  /**
   * The passing instances once Consul's index moves past `index` (at once for 0), with the new
   * index. Rejects with `Unavailable` when the agent cannot be asked or answers an error, and
   * with an `AbortError` when `signal` aborts.
   */
  fetch(index: number, signal: AbortSignal, options: QueryOptions = {}): Promise<PassingAnswer> {
    const waitMs = options.waitMs ?? WAIT_MS;
    const r = this.replicas;
    const params = new URLSearchParams({ passing: "1" });
    if (r.datacenter) params.set("dc", r.datacenter);
    if (r.tag) params.set("tag", r.tag);
    if (index > 0) {
      params.set("index", String(index));
      params.set("wait", `${Math.max(1, Math.round(waitMs))}ms`);
    }
    const url = `${r.https ? "https" : "http"}://${r.agent}/v1/health/service/${encodeURIComponent(r.service)}?${params}`;
    const headers: Record<string, string> = { Accept: "application/json" };
    if (r.token) headers["X-Consul-Token"] = r.token;
    const timeoutMs = waitMs + waitMs / 16 + 5_000;
    const unreachable = (reason: string, cause: unknown): Unavailable =>
      new Unavailable(
        `the Consul agent at ${r.agent} (${r.describe()}) cannot be reached: ${reason}; ` +
          "check the address and that the agent runs",
        { cause, retryAfterMs: RETRY_AFTER_MS },
      );
    return new Promise<PassingAnswer>((resolve, reject) => {
      const get = r.https ? https.get : http.get;
      const req = get(url, { headers, agent: this.agent, signal }, (resp) => {
        const chunks: Buffer[] = [];
        resp.on("data", (chunk: Buffer) => chunks.push(chunk));
        resp.on("error", (err) => reject(signal.aborted ? err : unreachable(errorName(err), err)));
        resp.on("end", () => {
          try {
            resolve(answer(r, resp, Buffer.concat(chunks)));
          } catch (err) {
            reject(err);
          }
        });
      });
      if (options.background) req.on("socket", (socket) => socket.unref());
      req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })));
      req.on("error", (err) => reject(signal.aborted ? err : unreachable(errorName(err), err)));
    });
  }

  /** Close the idle connection (after the last query). */
  close(): void {
    this.agent.destroy();
  }
}

function errorName(err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? err.name;
}

function answer(r: ConsulReplicas, resp: http.IncomingMessage, data: Buffer): PassingAnswer {
  const status = resp.statusCode ?? 0;
  if (status !== 200) {
    const hint = status === 401 || status === 403 ? " (check LATCHKEY_CONSUL_TOKEN)" : "";
    throw new Unavailable(
      `the Consul agent at ${r.agent} answered HTTP ${status} to the health query of service ` +
        `${JSON.stringify(r.service)}${hint}`,
      { retryAfterMs: RETRY_AFTER_MS },
    );
  }
  const header = resp.headers["x-consul-index"];
  const text = typeof header === "string" ? header.trim() : "0";
  let body: unknown;
  try {
    if (!/^\d+$/.test(text)) throw new SyntaxError("X-Consul-Index is not an integer");
    body = JSON.parse(data.toString("utf8"));
  } catch (err) {
    throw new Unavailable("the Consul agent sent an unreadable health answer", {
      cause: err,
      retryAfterMs: RETRY_AFTER_MS,
    });
  }
  return { index: Number(text), targets: targets(body) };
}

