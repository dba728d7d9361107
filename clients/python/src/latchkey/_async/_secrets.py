"""Secrets, database credentials and leases (async source of truth)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from latchkey import _convert
from latchkey._async._transport import AsyncStream, AsyncTransport
from latchkey._async._watch import AsyncWatch
from latchkey._errors import LatchkeyError
from latchkey._models import DatabaseCredentials, LeaseInfo, RenewedLease, Secret, StreamStatus
from latchkey._settings import Endpoint
from latchkey._streams import CredentialView, Rotation, SecretView
from latchkey.v1 import secrets_pb2

log = logging.getLogger("latchkey")

RotateCallback = Callable[[DatabaseCredentials], None]
ChangeCallback = Callable[[Secret], None]
StatusCallback = Callable[[StreamStatus], None]


class AsyncWatchedSecret:
    """A KV v2 secret kept current: `.current` always holds its latest version.

    The gateway polls the secret's version (`vault.kv_watch_interval`, 15 s by default) and
    pushes each new version; this object switches `.current` to it and calls the callbacks
    registered with `on_change`, in order. While Vault cannot be read `.current` keeps the last
    version and `on_status` callbacks hear `stale` (then `fresh`). After a reconnect it carries
    on (a version it already has is not reported again).
    """

    def __init__(self, transport: AsyncTransport, path: str, mount: str) -> None:
        self._transport = transport
        self.path = path
        self.mount = mount
        self._view = SecretView(path)
        self._callbacks: list[ChangeCallback] = []
        self._status_callbacks: list[StatusCallback] = []
        self.changes = 0
        """How many times the version changed since the watch started."""
        self._watch = AsyncWatch(
            transport, f"secret:{mount}/{path}", self._open, self._on_message, self._on_status
        )

    def __repr__(self) -> str:
        version = self._view.current.version if self._view.current is not None else None
        return f"<WatchedSecret {self.mount}/{self.path} version={version}>"

    @property
    def current(self) -> Secret:
        """The secret's latest version."""
        if self._view.current is None:
            raise LatchkeyError("the secret watch has not started")
        return self._view.current

    def on_change(self, callback: ChangeCallback) -> ChangeCallback:
        """Call `callback(new_version)` after each new version. Usable as a decorator."""
        self._callbacks.append(callback)
        return callback

    def on_status(self, callback: StatusCallback) -> StatusCallback:
        """Call `callback(StreamStatus)` when the gateway becomes unreachable, is back, or
        reports stale data."""
        self._status_callbacks.append(callback)
        return callback

    def _open(self) -> tuple[AsyncStream[Any], Endpoint]:
        request = _convert.watch_secret_request(self.path, self.mount)
        return self._transport.stream(lambda s: s.secrets.WatchSecret, request)

    async def _on_message(self, message: secrets_pb2.SecretEvent) -> None:
        first = self._view.current is None
        for event in self._view.apply(message):
            if isinstance(event, StreamStatus):
                self._on_status(event)
            elif not first:
                self.changes += 1
                for callback in list(self._callbacks):
                    try:
                        callback(event)
                    except Exception:
                        log.exception("an on_change callback for secret %s raised", self.path)

    def _on_status(self, status: StreamStatus) -> None:
        for callback in list(self._status_callbacks):
            callback(status)

    @property
    def closed(self) -> bool:
        return self._watch.closed

    async def start(self) -> AsyncWatchedSecret:
        await self._watch.start()
        return self

    async def aclose(self) -> None:
        """Stop watching."""
        await self._watch.aclose()

    async def __aenter__(self) -> AsyncWatchedSecret:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncSecrets:
    """`client.secrets`: static KV v2 secrets, read once or watched."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport
        self._watches: list[AsyncWatchedSecret] = []

    async def get(self, path: str, mount: str = "secret", version: int | None = None) -> Secret:
        """Read a KV v2 secret (`version=None` reads the latest). Raises `NotFound`."""
        request = _convert.secret_request(path, mount, version)
        response = await self._transport.unary(lambda s: s.secrets.GetSecret, request)
        return _convert.secret(response)

    async def watch(self, path: str, mount: str = "secret") -> AsyncWatchedSecret:
        """A secret kept current across new versions (see `WatchedSecret`). Raises `NotFound`
        when it does not exist. Close it, or the client, to stop watching."""
        watched = await AsyncWatchedSecret(self._transport, path, mount).start()
        self._watches = [w for w in self._watches if not w.closed]
        self._watches.append(watched)
        return watched

    async def aclose(self) -> None:
        watches, self._watches = self._watches, []
        for watched in watches:
            await watched.aclose()


class AsyncRotatingCredentials:
    """A database credential that stays valid: `.current` always holds the one to use.

    The gateway renews the lease and, before it can no longer be renewed, rotates it. This
    object switches `.current` to the new credential, calls the callbacks registered with
    `on_rotate` (in order; they may take their time, e.g. to retire pooled connections), and
    then acknowledges the rotation so that the gateway revokes the old lease. After a
    reconnect it re-attaches to the same lease. Closing it releases the lease.
    """

    def __init__(self, transport: AsyncTransport, role: str) -> None:
        self._transport = transport
        self.role = role
        self._view = CredentialView(role=role)
        self._callbacks: list[RotateCallback] = []
        self._status_callbacks: list[StatusCallback] = []
        self.rotations = 0
        """How many times the credential changed since the watch started."""
        self._watch = AsyncWatch(
            transport, f"db:{role}", self._open, self._on_message, self._on_status
        )

    def __repr__(self) -> str:
        return f"<RotatingCredentials role={self.role!r} lease_id={self._view.lease_id!r}>"

    @property
    def current(self) -> DatabaseCredentials:
        """The credential to connect with now."""
        if self._view.current is None:
            raise LatchkeyError("the credential watch has not started")
        return self._view.current

    def on_rotate(self, callback: RotateCallback) -> RotateCallback:
        """Call `callback(new_credentials)` after each rotation, before it is acknowledged.
        Usable as a decorator."""
        self._callbacks.append(callback)
        return callback

    def on_status(self, callback: StatusCallback) -> StatusCallback:
        """Call `callback(StreamStatus)` when the gateway becomes unreachable, is back, or
        reports stale data."""
        self._status_callbacks.append(callback)
        return callback

    def _open(self) -> tuple[AsyncStream[Any], Endpoint]:
        request = _convert.watch_credentials_request(self.role, self._view.lease_id)
        return self._transport.stream(lambda s: s.secrets.WatchDatabaseCredentials, request)

    async def _on_message(self, message: secrets_pb2.CredentialEvent) -> None:
        previous = self._view.current
        result = self._view.apply(message)
        if isinstance(result, Rotation):
            self._rotated(result.credentials)
            try:
                await self._transport.unary(
                    lambda s: s.secrets.AckRotation,
                    _convert.ack_request(result.watch_id, result.rotation_id),
                )
            except LatchkeyError as exc:  # the gateway revokes at the grace deadline anyway
                log.warning("acknowledging rotation of role %s failed: %s", self.role, exc.message)
        elif isinstance(result, DatabaseCredentials):
            if previous is not None and previous.lease_id != result.lease_id:
                self._rotated(result)  # the old lease was gone after a reconnect
        elif isinstance(result, StreamStatus):
            self._on_status(result)

    def _rotated(self, credentials: DatabaseCredentials) -> None:
        self.rotations += 1
        for callback in list(self._callbacks):
            try:
                callback(credentials)
            except Exception:
                log.exception("an on_rotate callback for role %s raised", self.role)

    def _on_status(self, status: StreamStatus) -> None:
        for callback in list(self._status_callbacks):
            callback(status)

    async def start(self) -> AsyncRotatingCredentials:
        await self._watch.start()
        return self

    async def aclose(self) -> None:
        """Stop watching and release the lease."""
        await self._watch.aclose()

    async def __aenter__(self) -> AsyncRotatingCredentials:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncDatabase:
    """`client.database`: dynamic database credentials."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def credentials(self, role: str) -> DatabaseCredentials:
        """A one-shot credential: the lease is held until it lapses or is revoked."""
        request = _convert.credentials_request(role)
        response = await self._transport.unary(lambda s: s.secrets.GetDatabaseCredentials, request)
        return _convert.credentials(response.credential)

    async def watch(self, role: str) -> AsyncRotatingCredentials:
        """A credential kept valid across renewals and rotations (see `RotatingCredentials`)."""
        return await AsyncRotatingCredentials(self._transport, role).start()


class AsyncLeases:
    """`client.leases`: the leases the gateway holds (mostly for operators)."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def list(self, role: str | None = None) -> list[LeaseInfo]:
        request = _convert.list_leases_request(role)
        response = await self._transport.unary(lambda s: s.secrets.ListLeases, request)
        return [_convert.lease_info(x) for x in response.leases]

    async def renew(self, lease_id: str, increment: float | None = None) -> RenewedLease:
        request = _convert.renew_request(lease_id, increment)
        return _convert.renewed(
            await self._transport.unary(lambda s: s.secrets.RenewLease, request)
        )

    async def revoke(self, lease_id: str, *, force: bool = False) -> bool:
        """Release the caller's hold (`force`: revoke in Vault now). True when revoked."""
        request = _convert.revoke_request(lease_id, force)
        response = await self._transport.unary(lambda s: s.secrets.RevokeLease, request)
        return response.revoked
