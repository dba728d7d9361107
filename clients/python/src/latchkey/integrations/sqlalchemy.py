"""SQLAlchemy integration for `RotatingCredentials`.

Example:
    with latchkey.Client() as client, client.database.watch("demo-readonly") as creds:
        engine = latchkey.integrations.sqlalchemy.engine(
            creds, "postgresql+psycopg://db.example/demo", pool_size=4
        )
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
"""

from __future__ import annotations

from typing import Any

try:
    import sqlalchemy
    from sqlalchemy import event
    from sqlalchemy.engine import URL, Engine, make_url
    from sqlalchemy.exc import DisconnectionError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "latchkey.integrations.sqlalchemy needs SQLAlchemy: pip install 'latchkey[sqlalchemy]'"
    ) from exc

from latchkey import DatabaseCredentials, RotatingCredentials
from latchkey.integrations._tracker import ConnectionTracker

__all__ = ["engine", "install"]

_USER = "latchkey_user"


def install(
    engine: Engine, credentials: RotatingCredentials, *, retire_timeout: float = 30.0
) -> None:
    """Make an existing engine follow rotations (event hooks).

    `do_connect` fills in the current username and password; a pooled connection opened with a
    rotated credential is refused at checkout (SQLAlchemy replaces it); on a rotation idle
    connections are disposed and the acknowledgement waits until busy ones are returned.
    """
    tracker = ConnectionTracker()

    @event.listens_for(engine, "do_connect")
    def do_connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        current = credentials.current
        cparams["user"] = current.username
        cparams["password"] = current.password.get_secret_value()
        conn_rec.info[_USER] = current.username

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, conn_rec: Any) -> None:
        tracker.opened(conn_rec.info[_USER])

    def _closed(dbapi_conn: Any, conn_rec: Any) -> None:
        user = conn_rec.info.pop(_USER, None)
        if user is not None:
            tracker.closed(user)

    event.listen(engine, "close", _closed)
    event.listen(engine, "close_detached", _closed)

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_conn: Any, conn_rec: Any, proxy: Any) -> None:
        if conn_rec.info.get(_USER) != credentials.current.username:
            raise DisconnectionError("connection opened with a rotated credential")

    @event.listens_for(engine, "checkin")
    def on_checkin(dbapi_conn: Any, conn_rec: Any) -> None:
        if dbapi_conn is not None and conn_rec.info.get(_USER) not in (
            None,
            credentials.current.username,
        ):
            conn_rec.invalidate()

    def on_rotate(new: DatabaseCredentials) -> None:
        engine.pool.dispose()  # closes idle connections; busy ones are retired at checkin
        tracker.wait_retired(new.username, retire_timeout)

    credentials.on_rotate(on_rotate)


def engine(
    credentials: RotatingCredentials, url: str | URL, *, retire_timeout: float = 30.0, **kwargs: Any
) -> Engine:
    """`sqlalchemy.create_engine(url, **kwargs)` whose connections follow `credentials`."""
    created = sqlalchemy.create_engine(make_url(url), **kwargs)
    install(created, credentials, retire_timeout=retire_timeout)
    return created
