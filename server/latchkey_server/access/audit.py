"""The audit log: one JSON line per RPC (or stream event), secret values only ever as HMACs.

Each `AuditRecord` becomes one line, keys always present and always in this order (`FIELDS`):

    {"time":"2025-01-02T03:04:05.678Z","request_id":"r-1","trace_id":"","identity":"billing",
     "auth_method":"token","peer":"ipv4:10.0.0.7:51234","rpc":"/latchkey.v1.Secrets/GetSecret",
     "resource":"secret/data/billing/db","kind":"secret","capability":"read","decision":"allow",
     "code":"OK","latency_ms":1.25,"event":"request",
     "returned":{"password":"hmac-sha256:9f86d0..."},"detail":""}

(shown wrapped; the real line has no newlines). `time` is RFC 3339 UTC with milliseconds and
`Z`. Every value of `returned` is written as `hmac-sha256:<hex>`, the HMAC-SHA256 of the value's
UTF-8 bytes under the audit key, never as the value itself: an operator holding the key can
check whether a leaked value was handed out (`AuditLog.hash_value`, or `hash_value(value,
load_key(path))` from a CLI) but the log alone reveals nothing. The key comes from the
configuration (`load_key`, at least MIN_KEY_BYTES bytes); without one a random key is
generated at start (HMACs are then not comparable across restarts).

Sinks: `"stdout"`, `"stderr"`, or a file path (opened for append, created mode 0600). Lines are
written whole (and flushed); there is no fsync. Writing takes a lock, so records from many
asyncio tasks and threads never interleave.

Two ways in. The gateway's calls use `AuditLog.submit` (on the event loop): records queued
during one loop iteration are formatted together and written with one `write`. A regular file
is written on the event loop (a secret-returning call's line at once, with what was queued
before it, so the call does not wait for another loop iteration): a write to the page cache
takes microseconds, while
handing each batch to a thread and back cost about 12 futex calls and 120 us of CPU per request
in the gateway (gRPC brings about one request per loop iteration, so a batch is ~1.1 lines and
the hand-offs are not shared). Sinks that can block while their reader does (stdout, stderr,
pipes, sockets, terminals) are written by the writer thread (access/audit_writer.py), so the
event loop never waits on them. `write` and `emit` write one line at once, in the calling
thread.

The fail-closed rule (`AuditLog.must_succeed`): when `fail_closed` is True (the default) and the
call returns secrets, the record is written *before* the secret is sent (`submit` returns a
future the call awaits: it completes when the record's batch is written), and a failed write
fails the call with `AuditUnavailable` (UNAVAILABLE). Any other failed write (a denial, an
error, a call that returns no secret, or `fail_closed=False`) is counted in `failures` and
logged, naming the sink and the RPC but no field of the record that could carry a secret, and
the call goes on (`submit` returns None for those: they are written just after the reply).
`AuditLog.emit` applies the rule; `AuditLog.write` always raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import secrets
import stat
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _json_str
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, TextIO, get_args

from latchkey_server.access.audit_writer import BatchWriter, Chunk, Waiter, settle
from latchkey_server.errors import InvalidArgument, Unavailable

log = logging.getLogger("latchkey.access.audit")

Decision = Literal["allow", "deny", "error", "n/a"]
Event = Literal["request", "stream_open", "stream_event", "stream_end"]

FIELDS: Final = (
    "time",
    "request_id",
    "trace_id",
    "identity",
    "auth_method",
    "peer",
    "rpc",
    "resource",
    "kind",
    "capability",
    "decision",
    "code",
    "latency_ms",
    "event",
    "returned",
    "detail",
)
"""The keys of every audit line, in the order they are written."""

HMAC_PREFIX: Final = "hmac-sha256:"
KEY_BYTES: Final = 32
"""The size of a generated key."""
MIN_KEY_BYTES: Final = 16
"""Shorter configured keys are refused: the HMAC is only as private as its key."""
MAX_DETAIL: Final = 200
"""`detail` is cut to this many characters."""
STDOUT: Final = "stdout"
STDERR: Final = "stderr"

UNAVAILABLE_MESSAGE: Final = (
    "the audit log cannot be written; secret-returning calls are refused until it can"
)

_DECISIONS: frozenset[str] = frozenset(get_args(Decision))
_EVENTS: frozenset[str] = frozenset(get_args(Event))


class AuditUnavailable(Unavailable):
    """The audit log cannot be written. The message never names a path or a record field."""

    def __init__(self, *, retry_after: float | None = None) -> None:
        super().__init__(UNAVAILABLE_MESSAGE, retry_after=retry_after)


# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What happened on one RPC (or one event of a stream). Secret values only in `returned`."""

    time: datetime
    """When the call was decided; timezone-aware (converted to UTC)."""
    request_id: str
    identity: str
    auth_method: str
    """"token" or "mtls" (`Identity.method`); "" when authentication failed."""
    peer: str
    rpc: str
    """The full method name, e.g. "/latchkey.v1.Secrets/GetSecret"."""
    resource: str
    kind: str
    capability: str
    decision: Decision
    code: str
    """The gRPC status name: "OK", "PERMISSION_DENIED", ..."""
    latency_ms: float
    event: Event = "request"
    returned: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Field name → secret value handed to the caller. Written only as HMACs."""
    detail: str = ""
    """A short, safe note (never a secret, token or upstream error text); cut to MAX_DETAIL."""
    trace_id: str = ""
    """The OpenTelemetry trace id of the call ("" when tracing is off or it was not traced)."""

    def __post_init__(self) -> None:
        moment = self.time
        if moment.tzinfo is not UTC:  # the gateway's own records are UTC already
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError("AuditRecord.time must be timezone-aware")
            object.__setattr__(self, "time", moment.astimezone(UTC))
        if self.decision not in _DECISIONS:
            raise ValueError(f"AuditRecord.decision must be one of {sorted(_DECISIONS)}")
        if self.event not in _EVENTS:
            raise ValueError(f"AuditRecord.event must be one of {sorted(_EVENTS)}")
        if not math.isfinite(self.latency_ms):
            raise ValueError("AuditRecord.latency_ms must be finite")
        if self.returned:  # a copy the caller cannot change (an empty one needs none)
            object.__setattr__(self, "returned", dict(self.returned))
        if len(self.detail) > MAX_DETAIL:
            object.__setattr__(self, "detail", self.detail[: MAX_DETAIL - 3] + "...")


_second_prefix: tuple[int, str] = (-1, "")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and `Z`: `2025-01-02T03:04:05.678Z`."""
    global _second_prefix
    utc = moment.astimezone(UTC)
    second = int(utc.timestamp())
    cached_second, prefix = _second_prefix
    if cached_second != second:  # strftime once per second, not once per line
        prefix = utc.strftime("%Y-%m-%dT%H:%M:%S.")
        _second_prefix = (second, prefix)
    return prefix + f"{utc.microsecond // 1000:03d}Z"


_DIGEST_MEMO = 4096


def hash_value(value: str, key: bytes) -> str:
    """`hmac-sha256:<hex>` of the UTF-8 bytes of `value` under `key`, as the audit log writes it.

    For operators: with the configured audit key, hash a leaked value and search the log for
    the result to find which calls handed it out.
    """
    data = value.encode("utf-8", "surrogatepass")
    return HMAC_PREFIX + hmac.new(key, data, hashlib.sha256).hexdigest()


def load_key(path: Path) -> bytes:
    """The audit HMAC key from `path` (config `audit.hmac_key_file`): its bytes, less trailing
    whitespace, used as they are (so `openssl rand -hex 32 > key` works). Raise InvalidArgument.
    """
    try:
        key = path.read_bytes().rstrip()
    except OSError as exc:
        raise InvalidArgument(f"audit key file {path} cannot be read: {_describe(exc)}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise InvalidArgument(
            f"audit key file {path}: the key must be at least {MIN_KEY_BYTES} bytes"
        )
    return key


# ---------------------------------------------------------------- the log


class AuditLog:
    """Writes `AuditRecord`s as JSON lines to one sink; see the module doc for the rules."""

    def __init__(
        self, sink: str | os.PathLike[str], key: bytes | None = None, *, fail_closed: bool = True
    ) -> None:
        if key is None:
            key = secrets.token_bytes(KEY_BYTES)
            log.warning(
                "no audit HMAC key configured: generated a random one; HMACs in the audit log "
                "will not be comparable across restarts"
            )
        elif len(key) < MIN_KEY_BYTES:
            raise InvalidArgument(f"the audit HMAC key must be at least {MIN_KEY_BYTES} bytes")
        self._key = bytes(key)
        self._digests: dict[str, str] = {}
        self.fail_closed = fail_closed
        self.failures = 0
        """Writes that failed since start (never reset)."""
        self._lock = threading.Lock()
        self._healthy = True
        self._closed = False
        self._torn = False  # a partial line was written: start the next one on a fresh line
        self._fd: int | None = None
        self._stream: str | None = None
        if str(sink) in (STDOUT, STDERR):
            self.sink = str(sink)
            self._stream = self.sink
        else:
            self.sink = os.fspath(sink)
            self._fd = _open_append(Path(self.sink))
        self._writer = (
            None
            if self._fd is not None and _regular_file(self._fd)
            else BatchWriter(self._commit, AuditUnavailable, name="latchkey-audit")
        )
        self._queued: list[AuditRecord] = []
        self._waiters: list[Waiter] = []
        self._flush_scheduled = False

    # ---------------------------------------------------------------- public API

    @property
    def healthy(self) -> bool:
        """False after a failed write, until a write succeeds again; False once closed."""
        return self._healthy and not self._closed

    def must_succeed(self, rpc_returns_secret: bool) -> bool:
        """Whether a failed write of this call's record must fail the call (fail-closed rule)."""
        return self.fail_closed and rpc_returns_secret

    def hash_value(self, value: str) -> str:
        """The `hmac-sha256:<hex>` this log writes for `value`.

        Memoised: a cached credential or secret is handed out (and audited) many times.
        """
        digest = self._digests.get(value)
        if digest is None:
            if len(self._digests) >= _DIGEST_MEMO:
                self._digests.clear()
            digest = self._digests[value] = hash_value(value, self._key)
        return digest

    def format_line(self, record: AuditRecord) -> str:
        """The JSON line written for `record`, newline included (keys in `FIELDS` order).

        Built by hand from the C string encoder `json.dumps` uses (ASCII-only output, every
        string escaped the same way), as `json.dumps(..., separators=(",", ":"))` would write it.
        """
        returned = ",".join(
            f'{_json_str(name)}:"{self.hash_value(value)}"'
            for name, value in sorted(record.returned.items())
        )
        return (
            f'{{"time":"{format_time(record.time)}",'
            f'"request_id":{_json_str(record.request_id)},'
            f'"trace_id":{_json_str(record.trace_id)},'
            f'"identity":{_json_str(record.identity)},'
            f'"auth_method":{_json_str(record.auth_method)},'
            f'"peer":{_json_str(record.peer)},'
            f'"rpc":{_json_str(record.rpc)},'
            f'"resource":{_json_str(record.resource)},'
            f'"kind":{_json_str(record.kind)},'
            f'"capability":{_json_str(record.capability)},'
            f'"decision":"{record.decision}",'
            f'"code":{_json_str(record.code)},'
            f'"latency_ms":{round(record.latency_ms, 3)!r},'
            f'"event":"{record.event}",'
            f'"returned":{{{returned}}},'
            f'"detail":{_json_str(record.detail)}}}\n'
        )

    def write(self, record: AuditRecord) -> None:
        """Write and flush one line; raise `AuditUnavailable` (and count it) if it cannot."""
        if not self._commit(self.format_line(record).encode("ascii"), 1, record.rpc):
            raise AuditUnavailable() from None

    def submit(self, record: AuditRecord, *, returns_secret: bool) -> asyncio.Future[None] | None:
        """Queue `record`; it is written with the others of this loop iteration (call it on
        the running event loop).

        When `must_succeed(returns_secret)`: with a regular file, write it at once (with what
        this iteration queued before it, in order) and return None, or raise
        `AuditUnavailable`; with a sink the writer thread writes, return a future the call
        awaits before it hands the secret out (it completes once the record's batch is written,
        or raises `AuditUnavailable`). Otherwise return None; a failed write is counted and
        logged.
        """
        loop = asyncio.get_running_loop()
        self._queued.append(record)
        waiter = None
        if self.fail_closed and returns_secret:
            if self._writer is None:  # no wait for the next loop iteration: the call is waiting
                records, self._queued = self._queued, []
                data = "".join([self.format_line(r) for r in records]).encode("ascii")
                if not self._commit(data, len(records), records[0].rpc):
                    raise AuditUnavailable()
                return None
            waiter = loop.create_future()
            self._waiters.append(waiter)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)  # after the callbacks of this loop iteration
        return waiter

    def _flush(self) -> None:
        """Format what this loop iteration queued; write it (a regular file) or hand it to the
        writer thread."""
        self._flush_scheduled = False
        records, self._queued = self._queued, []
        waiters, self._waiters = self._waiters, []
        if not records:
            return
        try:
            data = "".join([self.format_line(record) for record in records]).encode("ascii")
        except Exception as exc:  # a record that cannot be formatted must not lose the others
            log.error("audit records could not be formatted: %s", type(exc).__name__)
            self.failures += len(records)
            settle(waiters, AuditUnavailable)
            return
        if self._writer is not None:
            self._writer.put(Chunk(data, len(records), records[0].rpc, waiters))
        elif self._commit(data, len(records), records[0].rpc):
            settle(waiters, None)
        else:
            settle(waiters, AuditUnavailable)

    def _commit(self, data: bytes, lines: int, rpc: str) -> bool:
        """Write `data` (`lines` whole lines); count and log a failure naming the sink and `rpc`."""
        with self._lock:
            try:
                self._write_locked(data)
            except (OSError, ValueError) as exc:
                self.failures += lines
                first, failures, reason = self._healthy, self.failures, _describe(exc)
                self._healthy = False
            else:
                if not self._healthy:
                    log.warning(
                        "audit log %s is writable again after %d failed writes",
                        self.sink,
                        self.failures,
                    )
                self._healthy = True
                return True
        # Name the sink, the error class and the RPC only: nothing of the record may leak here.
        if first:
            log.error(
                "audit log %s cannot be written (%s) for %s; secret-returning calls are refused "
                "until it can",
                self.sink,
                reason,
                rpc,
            )
        else:
            log.debug("audit log %s still failing (%s), %d failures", self.sink, reason, failures)
        return False

    def emit(self, record: AuditRecord, *, returns_secret: bool) -> bool:
        """Write `record` applying the fail-closed rule; return whether it was written.

        Raises `AuditUnavailable` only when `must_succeed(returns_secret)`; otherwise a failure
        is counted and logged (by `write`) and False is returned.
        """
        try:
            self.write(record)
        except AuditUnavailable:
            if self.must_succeed(returns_secret):
                raise
            return False
        return True

    def close(self) -> None:
        """Write what is queued, then flush and close the sink (stdout and stderr stay open).
        Later writes fail."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    os.close(fd)
                except OSError as exc:
                    log.warning("closing audit log %s failed: %s", self.sink, _describe(exc))
            elif self._stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    _std_stream(self._stream).flush()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLog(sink={self.sink!r}, fail_closed={self.fail_closed})"

    # ---------------------------------------------------------------- internals

    def _write_locked(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("the audit log is closed")
        if self._torn:
            data = b"\n" + data
        if self._fd is not None:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._fd, view)
                except OSError:
                    self._torn = self._torn or len(view) < len(data)
                    raise
                view = view[written:]
            self._torn = False
            return
        assert self._stream is not None
        stream = _std_stream(self._stream)
        stream.write(data.decode("ascii"))
        stream.flush()
        self._torn = False


def _regular_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _open_append(path: Path) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise InvalidArgument(f"audit log {path} cannot be opened: {_describe(exc)}") from exc
    try:
        mode = os.fstat(fd).st_mode & 0o777
    except OSError:
        mode = 0
    if mode & 0o077:
        log.warning("audit log %s is readable by others (mode %04o); expected 0600", path, mode)
    return fd


def _std_stream(name: str) -> TextIO:
    """Looked up on every write, so a redirected `sys.stdout` (tests, daemons) is honoured."""
    return sys.stdout if name == STDOUT else sys.stderr


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} {os.strerror(exc.errno)}"
    return type(exc).__name__
