/** The gateway replicas Consul lists as passing, kept current (for `consul://` addresses). */

import { type ConsulReplicas, PassingQuery } from "./consul.js";
import { Cancelled, LatchkeyError, Unavailable } from "./errors.js";
import { Backoff, sleep } from "./retry.js";
import type { Endpoint } from "./settings.js";

/** How long the first call waits for Consul's first answer before failing (UNAVAILABLE). */
export const FIRST_ANSWER_TIMEOUT_MS = 10_000;

const WARNING = { code: "LATCHKEY_REPLICAS" } as const;

/**
 * Runs Consul's blocking health query for the gateway's service and hands every new set of
 * passing instances to `onChange`. An empty set, or Consul out of reach, keeps the last set (the
 * replicas may well be up; the calls themselves fail over). Problems are process warnings
 * (code `LATCHKEY_REPLICAS`), once per outage.
 */
export class ReplicaList {
  /** The last non-empty set of passing instances. */
  endpoints: readonly Endpoint[] = [];
  private running: Promise<void> | undefined;
  private error: LatchkeyError | undefined;
  private answered = false;
  private readonly answerWaiters = new Set<() => void>();
  private readonly stop = new AbortController();
  private readonly query: PassingQuery;

  constructor(
    readonly replicas: ConsulReplicas,
    private readonly tls: boolean,
    private readonly onChange: (endpoints: readonly Endpoint[]) => void,
    private readonly backoff = new Backoff(200, 5_000),
    private readonly firstAnswerTimeoutMs = FIRST_ANSWER_TIMEOUT_MS,
  ) {
    this.query = new PassingQuery(replicas);
  }

  /**
   * The replicas known now; the first call starts the query and waits for its answer. Rejects
   * with `Unavailable` when none is known (Consul unreachable, or no passing instance), with
   * `Cancelled` when `signal` aborts or the client is closed.
   */
  async ready(signal?: AbortSignal): Promise<readonly Endpoint[]> {
    if (this.stop.signal.aborted) throw new Cancelled("the client is closed");
    this.running ??= this.run().catch((err: unknown) => {
      process.emitWarning(`latchkey: the replica list stopped: ${String(err)}`, WARNING);
    });
    if (this.endpoints.length === 0 && !this.answered) await this.firstAnswer(signal);
    if (signal?.aborted) throw new Cancelled("the call was aborted", { cause: signal.reason });
    if (this.stop.signal.aborted) throw new Cancelled("the client is closed");
    if (this.endpoints.length > 0) return this.endpoints;
    if (this.error !== undefined) throw this.error;
    throw new Unavailable(
      `Consul lists no passing instance of service ${JSON.stringify(this.replicas.service)} ` +
        `(${this.replicas.describe()}): is a gateway running, registered in Consul ` +
        "(replica.register_service), and passing its check?",
      { retryAfterMs: 1_000 },
    );
  }

  /** Resolves at the first answer (or error) of Consul, the timeout, an abort or close. */
  private firstAnswer(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.answerWaiters.delete(done);
        signal?.removeEventListener("abort", done);
        this.stop.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, this.firstAnswerTimeoutMs); // ref'd: a call is waiting
      this.answerWaiters.add(done);
      signal?.addEventListener("abort", done, { once: true });
      this.stop.signal.addEventListener("abort", done, { once: true });
    });
  }

  private markAnswered(): void {
    this.answered = true;
    for (const waiter of [...this.answerWaiters]) waiter();
  }

  private async run(): Promise<void> {
    let index = 0;
    let attempt = 0;
    while (!this.stop.signal.aborted) {
      let answer;
      try {
        answer = await this.query.fetch(index, this.stop.signal, { background: true });
      } catch (err) {
        if (this.stop.signal.aborted) return;
        const error =
          err instanceof LatchkeyError
            ? err
            : new Unavailable(`finding gateway replicas in Consul failed: ${String(err)}`, { cause: err });
        if (this.error === undefined) {
          process.emitWarning(`latchkey: finding gateway replicas in Consul failed: ${error.message}`, WARNING);
        }
        this.error = error;
        this.markAnswered();
        await sleep(this.backoff.delayMs(attempt), this.stop.signal, false);
        attempt = Math.min(attempt + 1, 10);
        index = 0;
        continue;
      }
      if (this.error !== undefined) process.emitWarning("latchkey: finding gateway replicas in Consul works again", WARNING);
      this.error = undefined;
      attempt = 0;
      // Consul's index went back (a restarted agent): start over; below 1 counts as 1.
      index = answer.index >= index ? Math.max(answer.index, 1) : 0;
      const endpoints = answer.targets.map((target) => ({ target, tls: this.tls }));
      if (endpoints.length > 0 && !sameTargets(endpoints, this.endpoints)) {
        this.endpoints = endpoints;
        this.onChange(endpoints);
      } else if (endpoints.length === 0 && this.endpoints.length > 0) {
        process.emitWarning(
          `latchkey: Consul lists no passing instance of ${this.replicas.service}; keeping the last known replicas`,
          WARNING,
        );
      }
      this.markAnswered();
    }
  }

  /** Stop the query (a query in flight ends at once). */
  async close(): Promise<void> {
    this.stop.abort();
    await this.running;
    this.query.close();
  }
}

function sameTargets(a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  return a.length === b.length && a.every((e, i) => e.target === b[i]!.target);
}
