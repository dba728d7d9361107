/**
 * A node-postgres (`pg`) pool that follows credential rotations: `@latchkey/client/pg`.
 *
 * @example
 * import { Client } from "@latchkey/client";
 * import { createPool } from "@latchkey/client/pg";
 *
 * const client = new Client();
 * const creds = await client.database.watch("myapp-readonly");
 * const pool = createPool(creds, { host: "db.internal", database: "myapp", max: 4 });
 * console.log((await pool.query("SELECT 1 AS one")).rows);
 */

import type * as PgTypes from "pg";

import { ConfigurationError } from "./errors.js";
import type { DatabaseCredentials } from "./models.js";
import type { RotateListener, RotatingCredentials } from "./secrets.js";

let pg: (typeof import("pg"))["default"];
try {
  pg = (await import("pg")).default;
} catch (error) {
  throw new ConfigurationError("@latchkey/client/pg needs node-postgres: npm install pg", { cause: error });
}

/** The error a pool's idle connection is ended with when its credential was rotated (the pool
 * removes it; this error is never emitted to the application). */
class CredentialRotated extends Error {}

/** Open connections per database user (a credential is one user), and waiting for the rotated
 * ones to be gone. */
class ConnectionTracker {
  private readonly open = new Map<string, number>();
  private readonly changed = new Set<() => void>();

  opened(user: string): void {
    this.open.set(user, (this.open.get(user) ?? 0) + 1);
  }

  closed(user: string): void {
    const left = (this.open.get(user) ?? 1) - 1;
    if (left > 0) this.open.set(user, left);
    else this.open.delete(user);
    for (const wake of [...this.changed]) wake();
  }

  count(user: string): number {
    return this.open.get(user) ?? 0;
  }

  private onlyCurrent(current: string): boolean {
    for (const user of this.open.keys()) if (user !== current) return false;
    return true;
  }

  /** Resolves true once only `current` has open connections, false after `timeoutMs`. */
  waitRetired(current: string, timeoutMs: number): Promise<boolean> {
    if (this.onlyCurrent(current)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (result: boolean): void => {
        clearTimeout(timer);
        this.changed.delete(check);
        resolve(result);
      };
      const check = (): void => {
        if (this.onlyCurrent(current)) done(true);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.changed.add(check);
    });
  }
}

/** `pg.Pool` options, less the login (it comes from the rotating credential). */
export interface RotatingPoolOptions extends Omit<PgTypes.PoolConfig, "user" | "password" | "Client"> {
  /** How long a rotation waits for connections opened with the previous credential to be
   * released before it is acknowledged anyway, milliseconds (default 30,000). */
  retireTimeoutMs?: number;
}

/**
 * A `pg.Pool` whose connections log in with `credentials.current`. On a rotation its idle
 * connections with the previous credential close at once and busy ones when released (their
 * queries finish first); the rotation is acknowledged (and the old lease revoked) only once no
 * connection with the previous credential is left, or after `retireTimeoutMs`.
 */
export class RotatingPool extends pg.Pool {
  private readonly tracker: ConnectionTracker;
  private readonly idle = new Set<PgTypes.PoolClient>();
  private readonly onRotate: RotateListener;

  constructor(
    readonly credentials: RotatingCredentials,
    options: RotatingPoolOptions = {},
  ) {
    const tracker = new ConnectionTracker();
    const { retireTimeoutMs = 30_000, ...poolOptions } = options;
    super({ ...poolOptions, Client: rotatingClientClass(credentials, tracker) });
    this.tracker = tracker;
    this.on("release", (err, client) => {
      if (err) this.idle.delete(client);
      else this.idle.add(client);
    });
    this.on("acquire", (client) => this.idle.delete(client));
    this.on("remove", (client) => this.idle.delete(client));
    this.onRotate = async (next: DatabaseCredentials): Promise<void> => {
      if (this.ending) return;
      for (const client of [...this.idle]) {
        if ((client as unknown as PgTypes.Client).user !== next.username) {
          this.idle.delete(client);
          // An idle client that errors is ended and removed by the pool (pg's documented
          // behaviour); `emit` below keeps this error from the application.
          client.emit("error", new CredentialRotated("the credential was rotated"));
        }
      }
      if (!(await this.tracker.waitRetired(next.username, retireTimeoutMs))) {
        process.emitWarning(
          `latchkey pool: connections with a rotated credential still open after ${retireTimeoutMs} ms; acknowledging anyway`,
          { code: "LATCHKEY_POOL" },
        );
      }
    };
    credentials.on("rotate", this.onRotate);
  }

  /** Open connections that logged in as `username` (busy or idle). */
  connections(username: string): number {
    return this.tracker.count(username);
  }

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === "error" && args[0] instanceof CredentialRotated) return true;
    return super.emit(event, ...args);
  }

  override end(): Promise<void>;
  override end(callback: () => void): void;
  override end(callback?: () => void): Promise<void> | void {
    this.credentials.off("rotate", this.onRotate);
    return callback === undefined ? super.end() : super.end(callback);
  }
}

const RELEASE = Symbol("latchkey.release");

/** A `pg.Client` that logs in with the credential current when it is created, counts itself in
 * the tracker, and is destroyed rather than returned to the pool once its credential is stale. */
function rotatingClientClass(credentials: RotatingCredentials, tracker: ConnectionTracker): typeof PgTypes.Client {
  class RotatingClient extends pg.Client {
    constructor(config?: PgTypes.ClientConfig) {
      const login = credentials.current;
      super({ ...config, user: login.username, password: login.password });
      tracker.opened(login.username);
      this.once("end", () => tracker.closed(login.username));
    }
  }
  // The pool gives every client it hands out a `release` function; this accessor wraps it so
  // that releasing a client whose credential was rotated destroys it (`release(true)`).
  Object.defineProperty(RotatingClient.prototype, "release", {
    configurable: true,
    get(this: RotatingClient & { [RELEASE]?: (err?: unknown) => void }) {
      const release = this[RELEASE];
      if (release === undefined) return undefined;
      return (err?: unknown): void => release(err || (this.user !== credentials.current.username ? true : undefined));
    },
    set(this: RotatingClient & { [RELEASE]?: (err?: unknown) => void }, release: (err?: unknown) => void) {
      this[RELEASE] = release;
    },
  });
  return RotatingClient;
}

/** A rotation-safe `pg.Pool` for `credentials` (see `RotatingPool`). */
export function createPool(credentials: RotatingCredentials, options: RotatingPoolOptions = {}): RotatingPool {
  return new RotatingPool(credentials, options);
}
