"""The PostgreSQL fixture enforces password authentication."""

from __future__ import annotations

import secrets

import psycopg
from psycopg import sql

from latchkey_server.devstack.postgres import PostgresCluster


def test_role_with_password_logs_in_and_wrong_password_is_refused(
    postgres: PostgresCluster,
) -> None:
    role = f"fixture_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    try:
        assert postgres.can_login(role, password)
        assert not postgres.can_login(role, password + "x")
        assert not postgres.can_login(role, "")
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert not postgres.can_login(role, password)


def test_admin_connection_uses_scram(postgres: PostgresCluster) -> None:
    with psycopg.connect(postgres.dsn) as conn:
        row = conn.execute("SHOW password_encryption").fetchone()
        assert row is not None
        assert row[0] == "scram-sha-256"
        rules = conn.execute(
            "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'"
        ).fetchall()
    assert {r[0] for r in rules} == {"scram-sha-256"}
