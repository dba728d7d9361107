/** Retry decisions: exponential backoff with full jitter, and which errors are retried. */

import { setTimeout as delay } from "node:timers/promises";

import { type LatchkeyError, Unavailable } from "./errors.js";

/** Exponential backoff with full jitter (all times in milliseconds). */
export class Backoff {
  constructor(
    /** Upper bound of the first delay. */
    readonly initialMs = 100,
    /** Upper bound of any delay. */
    readonly maximumMs = 2_000,
    /** Growth of the upper bound per attempt. */
    readonly multiplier = 2,
  ) {}

  /** Milliseconds to wait before retry number `attempt` (0-based); at least `retryAfterMs`
   * (capped at the maximum). */
  delayMs(attempt: number, retryAfterMs?: number): number {
    const cap = Math.min(this.maximumMs, this.initialMs * this.multiplier ** attempt);
    let wait = Math.random() * cap;
    if (retryAfterMs !== undefined) wait = Math.max(wait, Math.min(retryAfterMs, this.maximumMs));
    return wait;
  }
}

/** Only UNAVAILABLE is retried: the request never reached a working gateway or upstream. */
export function isRetryable(error: LatchkeyError): boolean {
  return error instanceof Unavailable;
}

/** Wait `ms`; resolves early (false) when `signal` aborts, true when the time passed. With
 * `ref: false` the timer does not keep the process alive (background work). */
export async function sleep(ms: number, signal?: AbortSignal, ref = true): Promise<boolean> {
  if (signal?.aborted) return false;
  try {
    await delay(ms, undefined, signal ? { signal, ref } : { ref });
    return true;
  } catch {
    return false;
  }
}
