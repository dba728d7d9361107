"""Launcher of the `latchkey` command (the console script points here, not into `latchkey`).

gRPC core reads `GRPC_VERBOSITY` once, when `grpc` is first imported, and importing anything
under `latchkey` imports `grpc`. So this module, which imports nothing of latchkey's until
`main()` has run, silences gRPC core's own log lines (`I1201 ... Handshake failed ...`) unless
`--debug` is among the global options; the CLI reports every failure itself, with its fix.
The variable is restored once `grpc` is loaded, so commands that `latchkey exec` starts inherit
the caller's environment unchanged.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

GRPC_VERBOSITY = "GRPC_VERBOSITY"
INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells report it (also in `latchkey.cli._exit`)."""
CLEANUP_GRACE = 5.0
"""Seconds Ctrl-C leaves for closing streams and the client before the process exits anyway."""


def on_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: raise KeyboardInterrupt as Python does (the command closes its streams and
    exits 130), and make sure the process ends even if that cleanup hangs: the gateway sees
    the connection close and releases what the command held."""
    timer = threading.Timer(CLEANUP_GRACE, os._exit, args=(INTERRUPTED,))
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def wants_debug(args: list[str]) -> bool:
    """Whether `--debug` is among the arguments before a `--` (the global options)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--debug":
            return True
    return False


def main() -> None:
    """Entry point of `latchkey`."""
    debug = wants_debug(sys.argv[1:])
    saved = os.environ.get(GRPC_VERBOSITY)
    if saved is None or not debug:
        os.environ[GRPC_VERBOSITY] = "INFO" if debug else "NONE"
    try:
        from latchkey.cli import main as cli_main
    except KeyboardInterrupt:
        raise SystemExit(INTERRUPTED) from None
    finally:
        if saved is None:
            os.environ.pop(GRPC_VERBOSITY, None)
        else:
            os.environ[GRPC_VERBOSITY] = saved
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not ignored (`cmd &`)
        signal.signal(signal.SIGINT, on_interrupt)
    cli_main()


if __name__ == "__main__":
    main()
