"""Running the gateway in the foreground until SIGINT/SIGTERM (used by `latchkey-server serve`)."""

from __future__ import annotations

import asyncio
import signal

from latchkey_server.config import Settings
from latchkey_server.server import Gateway


async def serve_until_signalled(settings: Settings) -> None:
    gateway = Gateway(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_policies)
    try:
        port = await gateway.start()
        host = settings.listen.rsplit(":", 1)[0]
        # One machine-readable line on stdout once the gateway accepts calls.
        print(f"LATCHKEY_ADDR={host}:{port}", flush=True)
        await stop.wait()
    finally:
        await gateway.stop()
