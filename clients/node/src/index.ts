/**
 * `@latchkey/client`: the Node.js SDK of the latchkey gateway.
 *
 * @example
 * import { Client } from "@latchkey/client";
 *
 * const client = new Client(); // LATCHKEY_ADDR, LATCHKEY_TOKEN, ...
 * console.log((await client.secrets.get("myapp/database")).data);
 * await client.close();
 */

export { Client } from "./client.js";
export type { ConsulReplicas } from "./consul.js";
export { Binding, Config, ConfigWatch, type Validator, type WatchOptions } from "./config.js";
export {
  Cancelled,
  ConfigurationError,
  DeadlineExceeded,
  FailedPrecondition,
  Internal,
  InvalidArgument,
  LatchkeyError,
  type LatchkeyErrorOptions,
  NoHealthyInstances,
  NotFound,
  PermissionDenied,
  ResourceExhausted,
  StatusCode,
  type StatusCodeName,
  StatusError,
  TransportError,
  Unauthenticated,
  Unavailable,
} from "./errors.js";
export {
  type CheckState,
  type ConfigChange,
  type ConfigEntry,
  type ConfigEvent,
  type DatabaseCredentialFields,
  DatabaseCredentials,
  type Freshness,
  type GatewayStatus,
  type HealthStatus,
  type Instance,
  type LeaseInfo,
  type RegistrationHealth,
  type RenewedLease,
  Secret,
  type ServiceEvent,
  type StreamStatus,
  type UpstreamState,
  type UpstreamStatus,
} from "./models.js";
export { Database, Leases, type RotateListener, RotatingCredentials, Secrets, WatchedSecret } from "./secrets.js";
export {
  type PickStrategy,
  type RegisterOptions,
  Registration,
  type ServiceQuery,
  Services,
  ServiceWatch,
} from "./services.js";
export { type ClientOptions, type ClientSettings, type Endpoint, type PemSource } from "./settings.js";
export type { CallOptions } from "./transport.js";
export type { StatusEventName } from "./watch.js";

export const VERSION = "0.1.0";
