"""Start and stop vault-dev: build the core, serve HTTP, revoke everything on the way out."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from typing import TextIO

from aiohttp import web

from latchkey_server.devvault import ids
from latchkey_server.devvault.app import VaultHTTP
from latchkey_server.devvault.clock import Clock
from latchkey_server.devvault.core import Core
from latchkey_server.devvault.kv import KVBackend
from latchkey_server.devvault.logical import Backend, Mount
from latchkey_server.devvault.system import SystemBackend
from latchkey_server.devvault.token_backend import TokenBackend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VaultDevConfig:
    """Settings of one vault-dev instance."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8200
    """TCP port; 0 picks a free one."""
    root_token: str = "root"
    """The fixed dev root token's id."""
    reap_interval: float = 1.0
    """Seconds between expiry-reaper passes."""


class _Placeholder(Backend):
    """cubbyhole/ and identity/ are mounted for fidelity but serve no paths here."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.type_name = kind


def build_core(config: VaultDevConfig, clock: Clock | None = None) -> Core:
    """A core with Vault's dev-mode mounts and the fixed root token."""
    core = Core(clock=clock, reap_interval=config.reap_interval)

    def mount(path: str, kind: str, backend: Backend, **extra: object) -> None:
        accessor_prefix = "auth_" if path.startswith("auth/") else ""
        core.add_mount(
            Mount(
                path=path,
                type=kind,
                backend=backend,
                accessor=f"{accessor_prefix}{kind}_{ids.hex8()}",
                uuid=ids.new_uuid(),
                is_auth=path.startswith("auth/"),
                **extra,  # type: ignore[arg-type]
            )
        )

    token_backend = TokenBackend(core)
    mount(
        "sys/",
        "system",
        SystemBackend(core),
        description="system endpoints used for control, policy and debugging",
    )
    mount(
        "cubbyhole/",
        "cubbyhole",
        _Placeholder("cubbyhole"),
        description="per-token private secret storage",
    )
    mount("identity/", "identity", _Placeholder("identity"), description="identity store")
    mount(
        "secret/",
        "kv",
        KVBackend(core),
        description="key/value secret storage",
        options={"version": "2"},
    )
    mount("auth/token/", "token", token_backend, description="token based credentials")
    token_backend.create(
        None,
        {
            "id": config.root_token,
            "policies": ["root"],
            "no_parent": True,
            "no_default_policy": True,
        },
    )
    return core


class VaultDevServer:
    """One running vault-dev (HTTP site + core) inside the current event loop."""

    def __init__(self, config: VaultDevConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.core = build_core(config, clock)
        self._runner: web.AppRunner | None = None
        self.port = config.port

    @property
    def addr(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        app = VaultHTTP(self.core).application()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, shutdown_timeout=5.0)
        await site.start()
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break
        self.core.start()

    async def stop(self) -> None:
        """Stop accepting requests, wait for in-flight ones, then revoke every lease."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.core.shutdown()


async def serve(config: VaultDevConfig, out: TextIO = sys.stdout) -> int:
    """Run until SIGINT/SIGTERM; print the two export lines once ready."""
    server = VaultDevServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    out.write(f"export VAULT_ADDR={server.addr}\n")
    out.write(f"export VAULT_TOKEN={config.root_token}\n")
    out.flush()
    log.info("vault-dev listening on %s (development only, in-memory, unsealed)", server.addr)
    await stop.wait()
    log.info("shutting down: revoking %d outstanding lease(s)", len(server.core.leases))
    await server.stop()
    return 0


def run(config: VaultDevConfig) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(config))


class ThreadedVaultDev:
    """vault-dev on its own event loop in a background thread (for in-process use)."""

    def __init__(self, config: VaultDevConfig | None = None) -> None:
        self.config = config or VaultDevConfig(port=0)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.server: VaultDevServer | None = None

    @property
    def addr(self) -> str:
        assert self.server is not None
        return self.server.addr

    def start(self) -> None:
        self._thread.start()

        async def _start() -> VaultDevServer:
            server = VaultDevServer(self.config)
            await server.start()
            return server

        self.server = asyncio.run_coroutine_threadsafe(_start(), self._loop).result(timeout=30)

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=60)
            self.server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
