/** `Client`: the entry point of the SDK. */

import { Config } from "./config.js";
import * as convert from "./convert.js";
import * as gatewayPb from "./gen/latchkey/v1/gateway.js";
import type { GatewayStatus } from "./models.js";
import { Database, Leases, Secrets } from "./secrets.js";
import { Services } from "./services.js";
import { type ClientOptions, type ClientSettings, resolveSettings } from "./settings.js";
import { type CallOptions, Transport } from "./transport.js";

/**
 * A client of one latchkey gateway, or of several it fails over between.
 *
 * Options win; what is not given comes from `LATCHKEY_ADDR` (comma-separated addresses),
 * `LATCHKEY_TOKEN`, `LATCHKEY_CACERT`, `LATCHKEY_CLIENT_CERT` and `LATCHKEY_CLIENT_KEY`. An
 * address is `host:port` or `https://host:port` (TLS) or `http://host:port` (plaintext);
 * `insecure: true` forces plaintext. Channels open lazily, on first use. Calls that find the
 * gateway UNAVAILABLE are retried with backoff (on the next gateway) within `retryDeadlineMs`.
 *
 * @example
 * const client = new Client();
 * const secret = await client.secrets.get("myapp/database");
 * await client.close();
 */
export class Client {
  /** The settings the client was built with (addresses, timeouts; credentials included). */
  readonly settings: ClientSettings;
  /** KV v2 secrets. */
  readonly secrets: Secrets;
  /** Dynamic database credentials. */
  readonly database: Database;
  /** Leases the gateway holds (renew, revoke, list). */
  readonly leases: Leases;
  /** Live configuration. */
  readonly config: Config;
  /** Service discovery. */
  readonly services: Services;
  private readonly transport: Transport;

  constructor(options: ClientOptions = {}) {
    this.settings = resolveSettings(options);
    Object.defineProperty(this, "settings", { enumerable: false }); // keeps the token out of logs
    this.transport = new Transport(this.settings);
    this.secrets = new Secrets(this.transport);
    this.database = new Database(this.transport);
    this.leases = new Leases(this.transport);
    this.config = new Config(this.transport);
    this.services = new Services(this.transport);
  }

  /** The gateway address in use now. */
  get address(): string {
    return this.transport.address;
  }

  /** The gateway's view of the caller and the freshness of its upstreams. */
  async status(options?: CallOptions): Promise<GatewayStatus> {
    const resp = await this.transport.unary(gatewayPb.GatewayService.status, gatewayPb.StatusRequest.fromPartial({}), options);
    return convert.status(resp, this.transport.address);
  }

  /** Close every watch (releasing held leases) and channel. */
  async close(): Promise<void> {
    await Promise.all([
      this.config.closeAll(),
      this.services.closeAll(),
      this.database.closeAll(),
      this.secrets.closeAll(),
    ]);
    await this.transport.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
