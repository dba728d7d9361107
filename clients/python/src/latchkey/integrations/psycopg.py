"""psycopg 3 and psycopg_pool integration for `RotatingCredentials`.

Example:
    with latchkey.Client() as client, client.database.watch("demo-readonly") as creds:
        with latchkey.integrations.psycopg.pool(creds, "host=db dbname=demo", size=4) as pool:
            with pool.connection() as conn:
                conn.execute("SELECT 1")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import psycopg
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "latchkey.integrations.psycopg needs psycopg and psycopg_pool: "
        "pip install 'latchkey[psycopg]'"
    ) from exc

from latchkey import DatabaseCredentials, RotatingCredentials
from latchkey.integrations._tracker import ConnectionTracker

__all__ = ["TrackedConnection", "connection_factory", "pool"]


def _login(credentials: RotatingCredentials) -> dict[str, Any]:
    current = credentials.current
    return {"user": current.username, "password": current.password.get_secret_value()}


def connection_factory(
    credentials: RotatingCredentials, conninfo: str = "", **kwargs: Any
) -> Callable[[], psycopg.Connection[Any]]:
    """A function that opens a psycopg connection with the credential current at call time."""

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(conninfo, **{**kwargs, **_login(credentials)})

    return connect


class TrackedConnection(psycopg.Connection[Any]):
    """A psycopg connection that reports its closing to the pool's tracker."""

    _latchkey_release: Callable[[], None] | None = None

    def close(self) -> None:
        release, self._latchkey_release = self._latchkey_release, None
        try:
            super().close()
        finally:
            if release is not None:
                release()


def pool(
    credentials: RotatingCredentials,
    conninfo: str = "",
    *,
    size: int = 4,
    retire_timeout: float = 30.0,
    kwargs: dict[str, Any] | None = None,
    **pool_kwargs: Any,
) -> ConnectionPool[TrackedConnection]:
    """A `psycopg_pool.ConnectionPool` of `size` connections that follows rotations.

    New connections use `credentials.current`. On a rotation the pool is drained: idle
    connections close at once and busy ones when returned (their queries finish first); the
    rotation is acknowledged (and the old lease revoked) only once no connection with the old
    credential is left, or after `retire_timeout` seconds. A connection found at checkout to
    carry a rotated credential is closed and replaced (`check`), never handed out.
    """
    tracker = ConnectionTracker()
    extra = dict(kwargs or {})

    def connect_kwargs() -> dict[str, Any]:
        return {**extra, **_login(credentials)}

    def configure(conn: TrackedConnection) -> None:
        user = conn.info.user
        tracker.opened(user)
        conn._latchkey_release = lambda: tracker.closed(user)

    def check(conn: TrackedConnection) -> None:
        if conn.info.user != credentials.current.username:
            # Opened with a credential rotated since (its connect began before the rotation
            # and ended after the drain): close it, so the pool replaces it with one opened
            # with the current credential. (A connection only refused would go back into the
            # pool, be refused again at every checkout, and hold the rotation's retirement.)
            conn.close()
            raise psycopg.OperationalError("connection opened with a rotated credential")

    the_pool: ConnectionPool[TrackedConnection] = ConnectionPool(
        conninfo,
        connection_class=TrackedConnection,
        kwargs=connect_kwargs,
        min_size=size,
        max_size=size,
        configure=configure,
        check=check,
        **pool_kwargs,
    )

    def on_rotate(new: DatabaseCredentials) -> None:
        if the_pool.closed:
            return
        the_pool.drain()
        tracker.wait_retired(new.username, retire_timeout)

    credentials.on_rotate(on_rotate)
    return the_pool
