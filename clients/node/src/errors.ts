/**
 * The SDK's errors: one base, named after what went wrong.
 *
 *     LatchkeyError
 *     ├── TransportError               could not talk to the gateway
 *     │   ├── DeadlineExceeded         (DEADLINE_EXCEEDED)
 *     │   └── Cancelled                (CANCELLED; also a call whose AbortSignal fired)
 *     ├── StatusError                  the gateway answered with a non-OK status
 *     │   ├── InvalidArgument          (INVALID_ARGUMENT)
 *     │   ├── NotFound                 (NOT_FOUND)
 *     │   │   └── NoHealthyInstances   no instance of a service is healthy
 *     │   ├── PermissionDenied         (PERMISSION_DENIED)
 *     │   ├── Unauthenticated          (UNAUTHENTICATED)
 *     │   ├── FailedPrecondition       (FAILED_PRECONDITION)
 *     │   ├── ResourceExhausted        (RESOURCE_EXHAUSTED)
 *     │   ├── Unavailable              (UNAVAILABLE: retried with backoff; `retryAfterMs`)
 *     │   └── Internal                 (INTERNAL and any other code)
 *     └── ConfigurationError           the client was configured wrongly (no address, bad file)
 *
 * Every class carries its gRPC status code name as `code` (static and on instances); the
 * code→class table fills itself as the classes are defined. A gRPC error is translated in one
 * place (`translate` in transport.ts). Messages come from the gateway, which never puts a secret
 * value in them.
 */

/** gRPC status codes (names and numbers as in the gRPC spec). */
export const StatusCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** The name of a gRPC status code, e.g. `"NOT_FOUND"`. */
export type StatusCodeName = keyof typeof StatusCode;

/** The name of a gRPC status code from its number (`UNKNOWN` for numbers it does not know). */
export function statusCodeName(code: number): StatusCodeName {
  for (const [name, value] of Object.entries(StatusCode)) {
    if (value === code) return name as StatusCodeName;
  }
  return "UNKNOWN";
}

/** Options every SDK error accepts. */
export interface LatchkeyErrorOptions {
  /** The error this one stands for (for instance the transport's). */
  cause?: unknown;
  /** Milliseconds the gateway asked us to wait before retrying (its `retry-after` trailer). */
  retryAfterMs?: number | undefined;
  /** The status code the gateway sent, when the class stands for several (`Internal`). */
  code?: StatusCodeName | undefined;
}

type ErrorClass = new (message: string, options?: LatchkeyErrorOptions) => LatchkeyError;

const BY_CODE = new Map<StatusCodeName, ErrorClass>();

function register(cls: ErrorClass & { readonly code: StatusCodeName | undefined }): void {
  if (cls.code !== undefined && !BY_CODE.has(cls.code)) BY_CODE.set(cls.code, cls);
}

/** Base of every SDK error. `message` is safe to show: it never contains a secret value. */
export class LatchkeyError extends Error {
  /** The gRPC status code this class stands for, when it stands for one. */
  static readonly code: StatusCodeName | undefined = undefined;
  /** The gRPC status code, when the error came from a gRPC call. */
  readonly code: StatusCodeName | undefined;
  /** Milliseconds the gateway asked us to wait before retrying (UNAVAILABLE). */
  readonly retryAfterMs: number | undefined;

  constructor(message: string, options: LatchkeyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code ?? (new.target as unknown as typeof LatchkeyError).code;
    this.retryAfterMs = options.retryAfterMs;
  }

  /** The class that stands for a gRPC status code (`Internal` for codes without one). */
  static forCode(code: StatusCodeName): ErrorClass {
    return BY_CODE.get(code) ?? Internal;
  }
}

/** The SDK could not talk to the gateway. */
export class TransportError extends LatchkeyError {}

/** The call did not finish within its deadline. */
export class DeadlineExceeded extends TransportError {
  static override readonly code: StatusCodeName = "DEADLINE_EXCEEDED";
  static {
    register(this);
  }
}

/** The call was cancelled: its AbortSignal fired, or the client was closed. */
export class Cancelled extends TransportError {
  static override readonly code: StatusCodeName = "CANCELLED";
  static {
    register(this);
  }
}

/** The gateway answered with a non-OK status. */
export class StatusError extends LatchkeyError {}

/** The request was malformed; the message says which field and what is allowed. */
export class InvalidArgument extends StatusError {
  static override readonly code: StatusCodeName = "INVALID_ARGUMENT";
  static {
    register(this);
  }
}

/** The secret, key, lease or role does not exist. */
export class NotFound extends StatusError {
  static override readonly code: StatusCodeName = "NOT_FOUND";
  static {
    register(this);
  }
}

/** `services.pick` found no healthy instance of the service. */
export class NoHealthyInstances extends NotFound {}

/** The caller's identity may not do this. */
export class PermissionDenied extends StatusError {
  static override readonly code: StatusCodeName = "PERMISSION_DENIED";
  static {
    register(this);
  }
}

/** The gateway did not accept the caller's credentials (token or client certificate). */
export class Unauthenticated extends StatusError {
  static override readonly code: StatusCodeName = "UNAUTHENTICATED";
  static {
    register(this);
  }
}

/** The request cannot be served in the current state. */
export class FailedPrecondition extends StatusError {
  static override readonly code: StatusCodeName = "FAILED_PRECONDITION";
  static {
    register(this);
  }
}

/** A rate limit or quota was hit. */
export class ResourceExhausted extends StatusError {
  static override readonly code: StatusCodeName = "RESOURCE_EXHAUSTED";
  static {
    register(this);
  }
}

/** The gateway (or its upstream) cannot be reached; retried with backoff within a deadline. */
export class Unavailable extends StatusError {
  static override readonly code: StatusCodeName = "UNAVAILABLE";
  static {
    register(this);
  }
}

/** The gateway failed unexpectedly (or answered with a code the SDK does not name). */
export class Internal extends StatusError {
  static override readonly code: StatusCodeName = "INTERNAL";
  static {
    register(this);
  }
}

/** The client is configured wrongly (no address, unreadable certificate file, ...). */
export class ConfigurationError extends LatchkeyError {}
