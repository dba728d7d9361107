"""Why a connection to the gateway failed, in words that name the fix.

gRPC reports a failed connection as UNAVAILABLE with gRPC core's own text in `details` (there is
no structured cause), e.g. `failed to connect to all addresses; last error: UNAVAILABLE:
ipv4:127.0.0.1:7400: Socket closed`. `explain` matches the texts gRPC core is known to write
against what the client was configured with, and returns the error to raise instead: its class
(`HandshakeFailed`, `DevStackNotRunning` or plain `Unavailable`), whether waiting can help, and
a message naming the setting to change. gRPC's text is kept at the end of the message. The
texts are pinned by tests against real TLS servers (tests/sdk/test_tls.py and
tests/cli/test_errors.py).

A server that requires a client certificate completes the TLS 1.3 handshake and then closes the
connection when none was sent: the client only sees `Socket closed`. That text is therefore
read together with the settings (TLS or not, a client certificate sent or not), and such errors
stay retryable: a gateway that restarts can close a connection the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from latchkey._errors import DevStackNotRunning, HandshakeFailed, Unavailable
from latchkey._settings import (
    ENV_ADDR,
    ENV_CACERT,
    ENV_CLIENT_CERT,
    ENV_CLIENT_KEY,
    ENV_DEV_PID,
    ClientSettings,
    Endpoint,
)

_DEV_ENV = "source .latchkey/dev.env"


@dataclass(frozen=True)
class _Case:
    """One known failure: texts of gRPC core that identify it, and what to raise."""

    needles: tuple[str, ...]
    error: type[Unavailable]
    retryable: bool
    tls: bool | None = None
    """Only for TLS (True) or plaintext (False) endpoints; None: either."""
    client_cert: bool | None = None
    """Only when a client certificate was (True) or was not (False) configured."""
    message: str = ""
    """`{target}` is the failing address, `{ca}` what the server certificate was checked with."""


_CASES = (
    _Case(
        ("certificate_verify_failed",), HandshakeFailed, retryable=False, tls=True,
        message="the TLS certificate of the gateway at {target} does not verify against {ca}: "
        f"set {ENV_CACERT} to the CA that signed it (for the stack `make dev` runs: {_DEV_ENV})",
    ),
    _Case(
        ("hostname verification", "peer name"), HandshakeFailed, retryable=False, tls=True,
        message="the TLS certificate of the gateway at {target} is not issued for that host "
        f"name: set {ENV_ADDR} to a name the certificate carries (the dev gateway's: "
        "localhost or 127.0.0.1)",
    ),
    _Case(
        ("wrong_version_number", "http_request", "packet_length_too_long"), HandshakeFailed,
        retryable=False, tls=True,
        message="the server at {target} does not speak TLS: if it is a plaintext gateway, "
        f"set {ENV_ADDR}=http://{{target}}; otherwise check the port",
    ),
    _Case(
        ("failed to create security handshaker",), HandshakeFailed, retryable=False, tls=True,
        message="the TLS credentials could not be used: check that "
        f"{ENV_CLIENT_KEY} is the private key of {ENV_CLIENT_CERT}",
    ),
    _Case(
        ("socket closed", "connection reset"), HandshakeFailed, retryable=True, tls=True,
        client_cert=False,
        message="the gateway at {target} closed the TLS connection, and no client certificate "
        "was sent: a gateway that requires one (the dev gateway does) closes it so. Set "
        f"{ENV_CLIENT_CERT} and {ENV_CLIENT_KEY} (for the stack `make dev` runs: {_DEV_ENV})",
    ),
    _Case(
        ("socket closed", "connection reset"), HandshakeFailed, retryable=True, tls=True,
        client_cert=True,
        message="the gateway at {target} closed the TLS connection after the handshake: it "
        f"did not accept the client certificate in {ENV_CLIENT_CERT} (expired, or not issued "
        "by a CA the gateway trusts)",
    ),
    _Case(
        ("socket closed", "connection reset"), HandshakeFailed, retryable=True, tls=False,
        message="the gateway at {target} closed the plaintext connection: if it serves TLS "
        f"(the dev gateway does), set {ENV_CACERT} (and {ENV_CLIENT_CERT}/{ENV_CLIENT_KEY} if "
        f"it requires client certificates) or {ENV_ADDR}=https://{{target}}",
    ),
    _Case(
        ("connection refused",), Unavailable, retryable=True,
        message="nothing accepts connections at {target}: start the gateway (locally: make "
        f"dev, then {_DEV_ENV}) or correct {ENV_ADDR}",
    ),
    _Case(
        ("errors resolving", "domain name not found", "dns resolution failed"), Unavailable,
        retryable=True,
        message=f"the host in {{target}} cannot be resolved: correct {ENV_ADDR}",
    ),
)  # fmt: skip


def dev_stack_running(pid: int) -> bool:
    """Whether process `pid` is alive and (where /proc tells) still a latchkey process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"latchkey" in cmdline.read_bytes()
    except OSError:
        return True  # no /proc here: alive is all we can tell


def _grpc_reason(details: str) -> str:
    return details.split("last error: ", 1)[-1].removesuffix(": OK")


def explain(details: str, settings: ClientSettings, endpoint: Endpoint) -> Unavailable | None:
    """The error to raise for an UNAVAILABLE whose `details` gRPC core wrote, or None when the
    text is not one this module knows (the caller keeps gRPC's own message)."""
    target = endpoint.target
    if settings.dev_pid is not None and not dev_stack_running(settings.dev_pid):
        return DevStackNotRunning(
            f"the dev stack is not running ({ENV_DEV_PID} {settings.dev_pid} has exited, so "
            f"nothing answers at {target}): run make dev, then {_DEV_ENV} again",
            retryable=False,
        )
    text = details.lower()
    client_cert = settings.client_cert is not None
    for case in _CASES:
        if case.tls is not None and case.tls != endpoint.tls:
            continue
        if case.client_cert is not None and case.client_cert != client_cert:
            continue
        if any(needle in text for needle in case.needles):
            ca = (
                f"the CA in {ENV_CACERT}"
                if settings.cacert is not None
                else f"the system's trusted CAs ({ENV_CACERT} is not set)"
            )
            message = case.message.format(target=target, ca=ca)
            return case.error(
                f"{message} [gRPC: {_grpc_reason(details)}]", retryable=case.retryable
            )
    return None
