"""The gateway's lifecycle: startup, serving until told to stop, graceful shutdown.

`Gateway(settings)` only keeps the settings (no I/O). `start()` builds every component
(`components.build`, which reads the files the settings name) and starts them; `serve()` is what
`latchkey-server serve` runs: it captures SIGINT/SIGTERM (and SIGHUP, which reloads the
policies, the tokens file and the TLS files) for its duration and restores the previous
handlers afterwards, starts, waits for a signal or `request_stop()`, and shuts down. Reads no
argv and no environment.

Shutdown order (`shutdown()`):
1. health reports NOT_SERVING (load balancers and probes stop sending work), and the replica
   deregisters its `latchkey` service instance from Consul (clients that find replicas there
   move away);
2. the brokers drain: every open stream ends with UNAVAILABLE, a `retry-after` and a message
   naming the reason, and new streams are refused the same way;
3. the gRPC server stops, in-flight unary calls get `shutdown_grace` seconds;
4. the lease broker revokes every lease it holds; the replica removes their journal records,
   gives back its replica key and ends its Consul session;
5. the upstream adapters close (and the audit log, the tracer provider, flushing its spans, and
   the metrics listener).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from types import FrameType
from typing import Any

from prometheus_client import start_http_server

from latchkey_server import filewatch
from latchkey_server.access.authz import Authorizer
from latchkey_server.access.policies import PolicyStore
from latchkey_server.components import Components, build
from latchkey_server.config import Settings
from latchkey_server.errors import Draining, InvalidArgument
from latchkey_server.models import utcnow
from latchkey_server.observability.health import Dependency, HealthMonitor
from latchkey_server.transport.grpc_server import (
    CONFIG_SERVICE,
    DISCOVERY_SERVICE,
    SECRETS_SERVICE,
)

log = logging.getLogger("latchkey.server")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DRAIN_RETRY_AFTER = 1.0
"""The `retry-after` (seconds) streams get when the gateway drains."""


class Gateway:
    """One gateway process: gRPC server, brokers, access control and upstream adapters."""

    def __init__(self, settings: Settings, *, authorizer: Authorizer | None = None) -> None:
        self.settings = settings
        self._authorizer = authorizer
        self.started_at: datetime = utcnow()
        self._components: Components | None = None
        self.metrics_port: int = 0
        self.port: int = 0
        self._metrics_server: Any = None
        self._health_monitor: HealthMonitor | None = None
        self._file_watches: list[asyncio.Task[None]] = []
        self._stop_requested: asyncio.Event | None = None
        self._stop_reason = "stop requested"
        self._stopped = False
        self._captured: dict[int, Any] = {}

    # ---------------------------------------------------------------- what tests may inspect

    @property
    def components(self) -> Components:
        if self._components is None:
            raise RuntimeError("the gateway has not been started")
        return self._components

    @property
    def policies(self) -> PolicyStore | None:
        return self.components.policies

    # ---------------------------------------------------------------- serve

    async def serve(self, *, announce: Callable[[str], None] | None = None) -> None:
        """Run until SIGINT/SIGTERM (or `request_stop()`), then shut down gracefully.

        `announce` gets `host:port` once the gateway accepts calls (the CLI prints it).
        """
        with self.capture_signals():
            try:
                port = await self.start()
                if announce is not None:
                    announce(f"{self.settings.listen.rsplit(':', 1)[0]}:{port}")
                await self._stop_event().wait()
            finally:
                await self.shutdown(self._stop_reason)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask `serve()` to shut down (safe from signal handlers via the loop)."""
        self._stop_reason = reason
        self._stop_event().set()

    def _stop_event(self) -> asyncio.Event:
        if self._stop_requested is None:
            self._stop_requested = asyncio.Event()
        return self._stop_requested

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM (stop) and SIGHUP (reload the files) while serving; restore the
        previous handlers afterwards. Only in the main thread (signals go nowhere else)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()

        def on_signal(sig: int, frame: FrameType | None) -> None:
            name = signal.Signals(sig).name
            if sig == signal.SIGHUP:
                loop.call_soon_threadsafe(self.reload_files)
            else:
                loop.call_soon_threadsafe(self.request_stop, f"the gateway received {name}")

        handled = (*HANDLED_SIGNALS, signal.SIGHUP)
        self._captured = {sig: signal.signal(sig, on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, previous in self._captured.items():
                signal.signal(sig, previous)
            self._captured = {}

    # ---------------------------------------------------------------- startup

    async def start(self) -> int:
        """Build and start every component, then the gRPC server; return the bound port."""
        c = self._components = build(self.settings, authorizer=self._authorizer)
        self.started_at = c.started_at
        await c.replica.start()  # the lease journal first: no credential leaves without it
        for broker in c.brokers:
            await broker.start()
        self.port = await c.grpc.start()
        await c.replica.announce(self.settings.listen, self.port)  # clients may find it now
        if c.grpc.config.tls is None:
            log.warning("serving PLAINTEXT gRPC (insecure); use TLS anywhere but loopback")
        self._watch_files(c)
        self._health_monitor = HealthMonitor(
            [
                Dependency(c.vault, [SECRETS_SERVICE]),
                Dependency(c.consul, [CONFIG_SERVICE, DISCOVERY_SERVICE]),
            ],
            c.grpc.set_serving,
            stale_limit=self.settings.cache.stale_limit,
            interval=self.settings.health.probe_interval,
        )
        await self._health_monitor.check_once()
        self._health_monitor.start()
        if self.settings.metrics.listen:
            self._start_metrics(self.settings.metrics.listen)
        host = self.settings.listen.rsplit(":", 1)[0]
        log.info("latchkey gateway listening on %s:%d", host, self.port)
        return self.port

    def reload_policies(self) -> bool:
        """Reload the policy files now (SIGHUP); end streams a narrowed policy no longer allows.

        An invalid file keeps the previous policies in force (the store logs why).
        """
        c = self._components
        if c is None or c.policies is None or not c.policies.reload():
            return False
        ended = c.gate.recheck_streams()
        log.info(
            "policies reloaded (generation %d); %d open streams no longer allowed",
            c.policies.generation,
            ended,
        )
        return True

    def reload_tls(self) -> bool:
        """Re-read the TLS files now (SIGHUP): new handshakes use them, open connections carry
        on. A broken or mismatched set keeps the previous one (logged and counted)."""
        c = self._components
        return c is not None and c.grpc.tls is not None and c.grpc.tls.reload()

    def reload_tokens(self) -> bool:
        """Re-read the tokens file now (SIGHUP): new calls are authenticated against it. An
        invalid file keeps the tokens in force (logged)."""
        c = self._components
        return c is not None and c.tokens is not None and c.tokens.reload()

    def reload_files(self) -> None:
        """SIGHUP: the policies, the tokens file and the TLS files, at once."""
        self.reload_policies()
        self.reload_tokens()
        self.reload_tls()

    def _watch_files(self, c: Components) -> None:
        """Poll each file set the gateway re-reads (`filewatch`), at its configured interval."""
        auth = self.settings.auth.reload_interval
        if c.policies is not None:
            # reload_policies also ends the open streams a narrowed policy no longer allows.
            self._watch(filewatch.poll(_Policies(self), auth))
        if c.tokens is not None:
            self._watch(filewatch.poll(c.tokens, auth))
        if c.grpc.tls is not None:
            self._watch(filewatch.poll(c.grpc.tls, self.settings.tls.reload_interval))

    def _watch(self, loop: Coroutine[Any, Any, None]) -> None:
        self._file_watches.append(asyncio.create_task(loop))

    def _start_metrics(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        try:
            server, _thread = start_http_server(
                int(port), addr=host or "127.0.0.1", registry=self.components.telemetry.registry
            )
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"metrics.listen {listen!r}: {exc}") from exc
        self._metrics_server = server
        self.metrics_port = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host or "127.0.0.1", self.metrics_port)

    # ---------------------------------------------------------------- shutdown

    async def shutdown(self, reason: str = "the gateway is shutting down") -> None:
        """Graceful shutdown in the documented order. Safe to call twice, or after a failed
        start."""
        if self._stopped:
            return
        self._stopped = True
        c = self._components
        for task in self._file_watches:
            task.cancel()
        if self._health_monitor is not None:
            await self._health_monitor.close()
        if c is not None:
            log.info("draining: %s", reason)
            await c.grpc.not_serving()
            await c.replica.withdraw()  # consul:// clients move away before streams end
            drain = Draining(
                f"{reason}: this gateway is draining and closed the stream; reconnect "
                "(to another gateway, if you have several)",
                retry_after=DRAIN_RETRY_AFTER,
            )
            await c.config.close(drain)
            await c.discovery.close(drain)
            await c.secret_watches.close(drain)
            await c.registrations.close(drain)
            await c.leases.drain(drain)
            await c.grpc.stop(self.settings.shutdown_grace)
            await c.leases.close()
            await c.replica.close()
            await c.consul.close()
            await c.vault.close()
            c.audit.close()
            c.tracing.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        log.info("latchkey gateway stopped")

    async def stop(self) -> None:
        """`shutdown()` (for tests and embedders)."""
        await self.shutdown()


class _Policies:
    """The policy store as a `filewatch.Reloadable` whose reload is the gateway's (which also
    re-checks the open streams)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def changed(self) -> bool:
        policies = self._gateway.components.policies
        return policies is not None and policies.changed()

    def reload(self) -> bool:
        return self._gateway.reload_policies()
