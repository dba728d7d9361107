/**
 * Client settings: explicit options win; `LATCHKEY_*` variables fill what is missing.
 *
 * The environment is read here and nowhere else.
 */

import { readFileSync } from "node:fs";

import { type ConsulReplicas, isConsul, parse as parseConsul } from "./consul.js";
import { ConfigurationError } from "./errors.js";

export const ENV_ADDR = "LATCHKEY_ADDR";
export const ENV_TOKEN = "LATCHKEY_TOKEN";
export const ENV_CACERT = "LATCHKEY_CACERT";
export const ENV_CLIENT_CERT = "LATCHKEY_CLIENT_CERT";
export const ENV_CLIENT_KEY = "LATCHKEY_CLIENT_KEY";
export const ENV_CONSUL_TOKEN = "LATCHKEY_CONSUL_TOKEN";

/** A file path, or the PEM itself. */
export type PemSource = string | Buffer;

/** What a `Client` can be told; anything left out comes from `LATCHKEY_*` variables. */
export interface ClientOptions {
  /**
   * Gateway address(es): `host:port` (TLS), `https://host:port` (TLS) or `http://host:port`
   * (plaintext); a string may hold several separated by commas. The client fails over between
   * them. Or `consul://AGENT/SERVICE[?scheme=https&dc=DC&tag=TAG]`: the instances of SERVICE
   * that Consul lists as passing, kept current (TLS unless `insecure`; the agent's ACL token
   * from `LATCHKEY_CONSUL_TOKEN`). Default: `LATCHKEY_ADDR`.
   */
  addr?: string | readonly string[];
  /** Bearer token sent as `authorization: Bearer <token>`. Default: `LATCHKEY_TOKEN`. */
  token?: string;
  /** CA that signed the gateway's certificate (path or PEM). Default: `LATCHKEY_CACERT`, else
   * the system's roots. */
  cacert?: PemSource;
  /** Client certificate for mTLS (path or PEM). Default: `LATCHKEY_CLIENT_CERT`. */
  clientCert?: PemSource;
  /** Private key of the client certificate (path or PEM). Default: `LATCHKEY_CLIENT_KEY`. */
  clientKey?: PemSource;
  /** Plaintext to every address, whatever its scheme (loopback development only). */
  insecure?: boolean;
  /** Deadline of each unary attempt, milliseconds (default 10,000). */
  timeoutMs?: number;
  /** Total time a unary call may spend retrying UNAVAILABLE, milliseconds (default 15,000). */
  retryDeadlineMs?: number;
  /** Where `LATCHKEY_*` variables are read from (default `process.env`). */
  env?: Readonly<Record<string, string | undefined>>;
}

/** One gateway address. */
export interface Endpoint {
  /** `host:port` as gRPC dials it. */
  readonly target: string;
  /** Whether the channel uses TLS. */
  readonly tls: boolean;
}

/** Everything a client needs to reach the gateway. */
export interface ClientSettings {
  /** Gateway addresses, tried in order; the client fails over between them (empty when
   * `replicas` finds them). */
  readonly endpoints: readonly Endpoint[];
  /** Where Consul lists the gateway's replicas (`consul://AGENT/SERVICE`): its passing
   * instances are the failover list, kept current. */
  readonly replicas: ConsulReplicas | undefined;
  /** Whether the channels to the replicas found in Consul use TLS. */
  readonly replicasTls: boolean;
  readonly token: string | undefined;
  readonly cacert: Buffer | undefined;
  readonly clientCert: Buffer | undefined;
  readonly clientKey: Buffer | undefined;
  readonly timeoutMs: number;
  readonly retryDeadlineMs: number;
}

const NO_ADDRESS = `no gateway address: pass { addr: ... } or set ${ENV_ADDR} (e.g. https://127.0.0.1:7400)`;

function read(source: PemSource | undefined, what: string): Buffer | undefined {
  if (source === undefined || source === "") return undefined;
  if (Buffer.isBuffer(source)) return source;
  try {
    return readFileSync(source);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigurationError(`cannot read the ${what} file ${JSON.stringify(source)}: ${reason}`, {
      cause: err,
    });
  }
}

/**
 * `host:port` (TLS), `https://host:port` (TLS) or `http://host:port` (plaintext); a string may
 * hold several addresses separated by commas. `insecure` makes every address plaintext.
 */
export function parseAddresses(addr: string | readonly string[], insecure = false): Endpoint[] {
  const items = typeof addr === "string" ? [addr] : [...addr];
  const endpoints: Endpoint[] = [];
  for (const item of items) {
    for (const raw of item.split(",")) {
      let text = raw.trim();
      if (!text) continue;
      let tls = true;
      if (text.startsWith("http://")) {
        text = text.slice("http://".length);
        tls = false;
      } else if (text.startsWith("https://")) {
        text = text.slice("https://".length);
      } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
        throw new ConfigurationError(
          `unsupported address ${JSON.stringify(text)}: use host:port, https://host:port or http://host:port`,
        );
      }
      text = text.replace(/\/+$/, "");
      if (!/:\d+$/.test(text)) {
        throw new ConfigurationError(`address ${JSON.stringify(raw.trim())} has no port: use host:port`);
      }
      endpoints.push({ target: text, tls: insecure ? false : tls });
    }
  }
  if (endpoints.length === 0) throw new ConfigurationError(NO_ADDRESS);
  return endpoints;
}

function positive(value: number, name: string): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new ConfigurationError(`${name} must be a positive number of milliseconds, not ${value}`);
  }
  return value;
}

/** Build settings from explicit options, falling back to `LATCHKEY_*` variables. */
export function resolveSettings(options: ClientOptions = {}): ClientSettings {
  const env = options.env ?? process.env;
  const fromEnv = (name: string): string | undefined => env[name] || undefined;
  const addr = options.addr ?? fromEnv(ENV_ADDR);
  const token = options.token ?? fromEnv(ENV_TOKEN);
  const cacert = options.cacert ?? fromEnv(ENV_CACERT);
  const clientCert = options.clientCert ?? fromEnv(ENV_CLIENT_CERT);
  const clientKey = options.clientKey ?? fromEnv(ENV_CLIENT_KEY);
  if ((clientCert === undefined) !== (clientKey === undefined)) {
    throw new ConfigurationError(
      `a client certificate needs its key: give both ${ENV_CLIENT_CERT} and ${ENV_CLIENT_KEY}`,
    );
  }
  if (addr === undefined) throw new ConfigurationError(NO_ADDRESS);
  const insecure = options.insecure ?? false;
  const items = typeof addr === "string" ? [addr] : [...addr];
  let replicas: ConsulReplicas | undefined;
  let endpoints: Endpoint[] = [];
  if (items.some((item) => item.split(",").some(isConsul))) {
    if (items.length !== 1 || items[0]!.includes(",")) {
      throw new ConfigurationError(
        "a consul:// address stands alone: give either consul://AGENT/SERVICE or a " +
          "comma-separated list of gateway addresses",
      );
    }
    replicas = parseConsul(items[0]!, fromEnv(ENV_CONSUL_TOKEN));
  } else {
    endpoints = parseAddresses(addr, insecure);
  }
  return {
    endpoints,
    replicas,
    replicasTls: !insecure, // as a bare host:port: TLS unless insecure
    token,
    cacert: read(cacert, "CA certificate"),
    clientCert: read(clientCert, "client certificate"),
    clientKey: read(clientKey, "client key"),
    timeoutMs: positive(options.timeoutMs ?? 10_000, "timeoutMs"),
    retryDeadlineMs: positive(options.retryDeadlineMs ?? 15_000, "retryDeadlineMs"),
  };
}
