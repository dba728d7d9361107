"""`latchkey-server dev` (what `make dev` runs): ready, dev.env, credentials that log in."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import psycopg

from latchkey.v1 import secrets_pb2, secrets_pb2_grpc
from latchkey_server.devstack.postgres import PostgresCluster

REQUIRED = {
    "LATCHKEY_ADDR", "LATCHKEY_TOKEN", "LATCHKEY_CACERT", "LATCHKEY_CLIENT_CERT",
    "LATCHKEY_CLIENT_KEY", "VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN",
    "CONSUL_HTTP_ADDR", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PATH",
    "LATCHKEY_DEMO_DB_ROLE", "LATCHKEY_DEMO_PG_DSN",
}  # fmt: skip
VENV_BIN = str(Path(sys.executable).parent)

# What an operator types after `source .latchkey/dev.env` in a fresh shell (no venv active):
# the commands of Vault's and Consul's own docs, then latchkey reading what they wrote.
OPERATOR_SESSION = """
set -euo pipefail
source "$1"
bao kv put secret/myapp/database host=db.company.com username=myapp_user password=x >/dev/null
echo "secret=$(latchkey secrets get myapp/database --field password --reveal)"
consul kv put config/myapp/database/host db.company.com >/dev/null
echo "config=$(latchkey config get config/myapp/database/host --field value)"
echo "psql=$(psql -tAc 'SELECT count(*) FROM items')"
echo "dsn=$(psql "$(latchkey db creds demo-readonly --format dsn)" -tAc 'SELECT current_user')"
eval "$(latchkey db creds demo-readonly --format env)" && echo "brokered=$(psql -tAc 'SELECT 1')"
echo "user=$PGUSER"
command -v latchkey bao consul
"""
# The same shell later, after the stack stopped (dev.env is gone; the variables are not).
STALE_SESSION = """
source "$1"
latchkey status
echo "rc=$?"
"""


def _read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, raw = line[len("export ") :].partition("=")
            values[name] = shlex.split(raw)[0] if raw else ""
    return values


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    seen: list[str] = []
    found = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if needle in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(timeout), f"`latchkey-server dev` never printed {needle!r}: {seen}"
    return seen


def _operator_session(
    dev_env: Path, session: str = OPERATOR_SESSION
) -> subprocess.CompletedProcess[str]:
    """Run `session` in bash with a PATH that lacks the venv (nothing activated)."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != VENV_BIN)
    keep = ("HOME", "LANG", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ} | {"PATH": path}
    return subprocess.run(
        ["bash", "-c", session, "session", str(dev_env)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_dev_stack_ready_and_credentials_log_in(tmp_path: Path, postgres: PostgresCluster) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "LATCHKEY_DEMO_PG_DSN": postgres.dsn}
    log = (tmp_path / "dev.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "latchkey_server", "dev", "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_line(proc, "ready", timeout=120)
        values = _read_env(state / "dev.env")
        assert set(values) >= REQUIRED
        assert (state / "dev.env").stat().st_mode & 0o077 == 0
        # mTLS with the dev identity's client certificate, plus the dev token.
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(values["LATCHKEY_CACERT"]).read_bytes(),
            private_key=Path(values["LATCHKEY_CLIENT_KEY"]).read_bytes(),
            certificate_chain=Path(values["LATCHKEY_CLIENT_CERT"]).read_bytes(),
        )
        with grpc.secure_channel(values["LATCHKEY_ADDR"], credentials) as channel:
            stub = secrets_pb2_grpc.SecretsStub(channel)
            reply = stub.GetDatabaseCredentials(
                secrets_pb2.GetDatabaseCredentialsRequest(role=values["LATCHKEY_DEMO_DB_ROLE"]),
                metadata=(("authorization", f"Bearer {values['LATCHKEY_TOKEN']}"),),
                timeout=30,
            )
        cred = reply.credential
        dsn = postgres.dsn_for(cred.username, cred.password, "demo")
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM items").fetchone()
        assert row is not None
        assert row[0] == 3
        session = _operator_session(state / "dev.env")
        assert "secret=x" in session.stdout, session
        assert "config=db.company.com" in session.stdout, session
        assert "psql=3" in session.stdout, session
        # A brokered credential in the forms people paste: a libpq URI and PG* variables.
        assert "dsn=v-" in session.stdout, session
        assert "brokered=1" in session.stdout, session
        assert "user=v-" in session.stdout, session
        stale_env = tmp_path / "dev.env.copy"
        stale_env.write_text((state / "dev.env").read_text())
        found = session.stdout.split()[-3:]
        assert found[0] == str(Path(VENV_BIN) / "latchkey")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=90)
        log.close()
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0, (tmp_path / "dev.log").read_text()[-3000:]
    # A shell that still has the variables is told the stack is gone, and what to do.
    stale = _operator_session(stale_env, STALE_SESSION)
    assert "rc=5" in stale.stdout, stale
    assert "error: DevStackNotRunning: the dev stack is not running" in stale.stderr, stale
    assert "run make dev" in stale.stderr
    # The audit log recorded the call, with the password only as an HMAC.
    audit = (state / "audit.log").read_text()
    assert "/latchkey.v1.Secrets/GetDatabaseCredentials" in audit
    assert cred.password not in audit
    assert '"password":"hmac-sha256:' in audit
    # Ctrl-C stopped everything and revoked the leases: the credential no longer logs in.
    assert not postgres.can_login(cred.username, cred.password, "demo")
