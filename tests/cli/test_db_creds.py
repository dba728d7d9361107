"""`latchkey db creds --format env|dsn`: what people paste, logging in with the real `psql`.

The role's passwords come from an OpenBao password policy full of characters that shells and
URIs treat specially, so the quoting is tested by a real shell's `eval` and by libpq itself.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

import latchkey
from latchkey.cli._creds import dsn, env_lines
from latchkey_server.devstack.seed import DEMO_DATABASE, READONLY_CREATION
from tests.cli.helpers import LATCHKEY, clean_env, run_cli
from tests.fixtures.gateway import GatewayHandle
from tests.sdk.conftest import Upstreams

SPECIAL = '$`"\\ @/:?#%&=!*;~<>|()[]{}^'
"""Characters a password must survive: shell, URI and libpq syntax (not `'`: the role's
CREATE ROLE statement quotes the password with it)."""
POLICY = f"""
length = 24
rule "charset" {{
  charset = "abcdefghijklmnopqrstuvwxyz"
  min-chars = 2
}}
rule "charset" {{
  charset = {json.dumps(SPECIAL)}
  min-chars = 8
}}
"""

PSQL = shutil.which("psql")


@pytest.fixture(scope="module")
def quoted_role(upstreams: Upstreams, gateway: GatewayHandle) -> str:
    """A role on the demo database whose passwords are full of special characters."""
    suffix = uuid.uuid4().hex[:8]
    vault = upstreams.vault
    vault.adapter.put(f"/v1/sys/policies/password/cli-{suffix}", json={"policy": POLICY})
    db = gateway.db
    vault.secrets.database.configure(
        name=f"cli-{suffix}", plugin_name="postgresql-database-plugin",
        connection_url=db.vault_connection_url, username=db.admin_user,
        password=db.admin_password, allowed_roles="*", password_policy=f"cli-{suffix}",
    )  # fmt: skip
    role = f"quoted-{suffix}"
    vault.secrets.database.create_role(
        name=role, db_name=f"cli-{suffix}", creation_statements=READONLY_CREATION,
        default_ttl="5m", max_ttl="10m",
    )  # fmt: skip
    return role


def _pg_env(gateway: GatewayHandle, **extra: str) -> dict[str, str]:
    if PSQL is None:
        pytest.fail("psql is required (it comes with PostgreSQL: apt-get install postgresql)")
    return clean_env(
        LATCHKEY_ADDR=gateway.addr,
        LATCHKEY_TOKEN=gateway.tokens["app"],
        PGHOST=gateway.db.host,
        PGPORT=str(gateway.db.port),
        PGDATABASE=DEMO_DATABASE,
        PATH=f"{LATCHKEY.parent}:{Path(PSQL).parent}",
        **extra,
    )


SESSION = """
set -eu
eval "$(latchkey db creds "$1" --format env)"
printf '%s' "$PGPASSWORD" > "$2"
printf 'user=%s\\n' "$PGUSER"
printf 'psql=%s\\n' "$(psql -XAtc 'SELECT current_user')"
dsn="$(latchkey db creds "$1" --format dsn)"
printf 'dsn=%s\\n' "$(psql "$dsn" -XAtc 'SELECT count(*) FROM items')"
"""


async def test_env_and_dsn_log_in_with_psql(
    gateway: GatewayHandle, quoted_role: str, tmp_path: Path
) -> None:
    sh = shutil.which("sh") or "/bin/sh"
    proc = await asyncio.create_subprocess_exec(
        sh, "-c", SESSION, "session", quoted_role, str(tmp_path / "pw"), env=_pg_env(gateway),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = dict(line.split("=", 1) for line in out.decode().splitlines())
    assert lines["psql"] == lines["user"]
    assert lines["user"].startswith("v-")
    assert lines["dsn"] == "3"
    password = (tmp_path / "pw").read_text()
    assert sum(c in SPECIAL for c in password) >= 8, "the policy's special characters"


async def test_env_prefix_and_bad_combinations(gateway: GatewayHandle, quoted_role: str) -> None:
    env = _pg_env(gateway)
    run = await run_cli("db", "creds", quoted_role, "--format", "env", "--prefix", "DB_", env=env)
    assert run.code == 0, run
    names = [line.split("=")[0] for line in run.stdout.splitlines() if line.startswith("export")]
    assert names == ["export DB_USER", "export DB_PASSWORD"]
    assert run.stdout.startswith("# latchkey lease database/creds/" + quoted_role)
    bad = await run_cli("db", "creds", quoted_role, "--format", "env", "--prefix", "1X", env=env)
    assert bad.code == 2
    assert "--prefix" in bad.stderr
    both = await run_cli("db", "creds", quoted_role, "--format", "dsn", "--field", "x", env=env)
    assert both.code == 2
    assert "--field cannot be combined with --format dsn" in both.stderr


def _creds(password: str) -> latchkey.DatabaseCredentials:
    return latchkey.DatabaseCredentials.model_validate(
        {
            "username": "v-user@x",
            "password": SecretStr(password),
            "lease_id": "database/creds/r/1",
            "role": "r",
            "renewable": True,
            "expires_at": "2030-01-01T00:00:00Z",
        }
    )


@pytest.mark.parametrize(
    ("host", "port", "dbname", "expected"),
    [
        ("db.example", "5433", "my db", {"host": "db.example", "port": "5433", "dbname": "my db"}),
        ("::1", "5432", "demo", {"host": "::1", "port": "5432", "dbname": "demo"}),
        ("/run/pg", "5433", "demo", {"host": "/run/pg", "port": "5433", "dbname": "demo"}),
        (None, None, None, {}),
    ],
)  # fmt: skip
def test_dsn_as_libpq_parses_it(
    host: str | None, port: str | None, dbname: str | None, expected: dict[str, str]
) -> None:
    password = SPECIAL + "abc"
    parsed = conninfo_to_dict(dsn(_creds(password), host=host, port=port, dbname=dbname))
    assert parsed == {"user": "v-user@x", "password": password, **expected}


async def test_dsn_connects_with_psycopg(gateway: GatewayHandle, quoted_role: str) -> None:
    run = await run_cli("db", "creds", quoted_role, "--format", "dsn", env=_pg_env(gateway))
    assert run.code == 0, run
    with psycopg.connect(run.stdout.strip()) as conn:
        row = conn.execute("SELECT count(*) FROM items").fetchone()
    assert row == (3,)


def test_env_lines_round_trip_through_a_shell() -> None:
    password = SPECIAL + "abc\n"
    creds = _creds(password).model_copy(update={"expires_at": None})
    lines = env_lines(creds, "PG")
    assert lines.splitlines()[0] == "# latchkey lease database/creds/r/1"
    shown = subprocess.run(
        ["sh", "-c", 'eval "$1"; printf "%s|%s" "$PGUSER" "$PGPASSWORD"', "sh", lines],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shown.stdout == f"v-user@x|{password}"
