"""The ``postgresql-database-plugin``: blocking psycopg 3 calls (run them in a worker thread).

Error messages are scrubbed of the connection password before they leave this module.
"""

from __future__ import annotations

import random
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql

PLUGIN_NAME = "postgresql-database-plugin"
DEFAULT_ROTATE_ROOT = "ALTER ROLE \"{{username}}\" WITH PASSWORD '{{password}}';"
DEFAULT_RENEW = "ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';"
_PASSWORD_CHARS = string.ascii_letters + string.digits + "-"
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", re.DOTALL)
_END_WORD = re.compile(r"\bEND\b", re.IGNORECASE)


class PluginError(Exception):
    """A database failure whose message is safe to show (no credentials)."""


def generate_password(length: int = 20) -> str:
    """``[A-Za-z0-9-]``, with at least one lowercase, uppercase, digit and dash."""
    required = [
        secrets.choice(string.ascii_lowercase),
        secrets.choice(string.ascii_uppercase),
        secrets.choice(string.digits),
        "-",
    ]
    rest = [secrets.choice(_PASSWORD_CHARS) for _ in range(length - len(required))]
    chars = required + rest
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def split_statements(statement: str) -> list[str]:
    """One list element → the SQL pieces to execute (``;``-split unless it has an END block)."""
    if _END_WORD.search(_QUOTED.sub("", statement)):
        return [statement]
    return [piece.strip() for piece in statement.split(";") if piece.strip()]


def _retry_on_acl_race(action: Callable[[], None], attempts: int = 6) -> None:
    """Run `action`, retrying PostgreSQL's "tuple concurrently updated" (XX000) error.

    Concurrent GRANT/REVOKE statements on one object (the database, a schema, a table) race on
    its ACL row and the loser fails with that error; the transaction is safe to run again.
    """
    for attempt in range(attempts):
        try:
            action()
            return
        except PluginError as exc:
            if "tuple concurrently updated" not in str(exc) or attempt == attempts - 1:
                raise
            # Backoff between retries in this worker thread (not a synchronisation).
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))


def render(statement: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        statement = statement.replace("{{" + key + "}}", value)
    return statement


@dataclass
class PostgresConnection:
    connection_url: str
    username: str = ""
    password: str = ""
    disable_escaping: bool = False
    connect_timeout: int = 5

    def _dsn(self) -> str:
        user, pw = self.username, self.password
        if not self.disable_escaping:
            user, pw = quote(user, safe=""), quote(pw, safe="")
        return self.connection_url.replace("{{username}}", user).replace("{{password}}", pw)

    def _secrets(self) -> list[str]:
        found = [s for s in (self.password, quote(self.password, safe="")) if s]
        try:
            url_pw = urlsplit(self.connection_url).password
        except ValueError:
            url_pw = None
        if url_pw and url_pw != "{{password}}":
            found.append(url_pw)
        match = re.search(r"password\s*=\s*(\S+)", self.connection_url)
        if match:
            found.append(match.group(1).strip("'\""))
        return sorted(set(found), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "*****")
        return text

    def _error(self, exc: BaseException) -> PluginError:
        message = str(exc).strip() or type(exc).__name__
        return PluginError(self.scrub(" ".join(message.split())))

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        try:
            return psycopg.connect(
                self._dsn(), connect_timeout=self.connect_timeout, autocommit=False
            )
        except Exception as exc:
            raise self._error(exc) from None

    def verify(self) -> None:
        with self._connect() as conn:
            try:
                conn.execute("SELECT 1")
            except Exception as exc:
                raise self._error(exc) from None

    def run(self, statements: list[str], values: dict[str, str]) -> None:
        """Execute the statements in one transaction, with the placeholders filled in."""
        _retry_on_acl_race(lambda: self._run_once(statements, values))

    def _run_once(self, statements: list[str], values: dict[str, str]) -> None:
        with self._connect() as conn:
            try:
                with conn.transaction():
                    for statement in statements:
                        for piece in split_statements(statement):
                            conn.execute(render(piece, values).encode())
            except Exception as exc:
                raise self._error(exc) from None

    def default_revoke(self, username: str) -> None:
        """Revoke the user's privileges and drop it (a missing role is a success)."""
        _retry_on_acl_race(lambda: self._default_revoke_once(username))

    def _default_revoke_once(self, username: str) -> None:
        user = sql.Identifier(username)
        with self._connect() as conn:
            try:
                with conn.transaction():
                    exists = conn.execute(
                        "SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)
                    ).fetchone()
                    if exists is None:
                        return
                    schemas = conn.execute(
                        "SELECT DISTINCT table_schema FROM information_schema.role_column_grants "
                        "WHERE grantee = %s",
                        (username,),
                    ).fetchall()
                    for (schema,) in schemas:
                        ident = sql.Identifier(str(schema))
                        conn.execute(
                            sql.SQL(
                                "REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA {} FROM {}"
                            ).format(ident, user)
                        )
                        conn.execute(
                            sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(ident, user)
                        )
                    conn.execute(
                        sql.SQL(
                            "REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM {}"
                        ).format(user)
                    )
                    conn.execute(
                        sql.SQL(
                            "REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public FROM {}"
                        ).format(user)
                    )
                    conn.execute(sql.SQL("REVOKE USAGE ON SCHEMA public FROM {}").format(user))
                    dbname = conn.execute("SELECT current_database()").fetchone()
                    if dbname is not None:
                        conn.execute(
                            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                                sql.Identifier(str(dbname[0])), user
                            )
                        )
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(user))
            except Exception as exc:
                raise self._error(exc) from None
