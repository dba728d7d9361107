"""Figure 8: how long a killed gateway's credentials outlive it (issue 13).

A replica (its own `latchkey-server serve` process, sharing the stack's Consul, Vault and
PostgreSQL, a replica id of its own) brokers N credentials on N fresh roles (TTL 60 s, so no
lease lapses by itself during the measurement), then is SIGKILLed:

- reaper: the stack's gateway is the second replica; from the SIGKILL to the moment the last of
  the N credentials is refused by PostgreSQL (its session dies within twice its TTL, the
  reaper waits the grace, then revokes). Target: session TTL + 10 s.
- restart: the killed replica is started again at once with the same id; from its restart to
  the last credential refused (it waits for its previous session to end, then revokes what it
  journaled). Target: 10 s.
"""

from __future__ import annotations

import secrets
import sys
import time
from typing import Any

import grpc
import hvac
import yaml

from bench.report import Figure
from bench.scenarios import Context
from bench.stack import Stack, _grpc_serving, gateway_overrides
from latchkey.v1 import secrets_pb2
from latchkey_server.devstack.ports import free_ports
from latchkey_server.devstack.process import ManagedProcess
from latchkey_server.devstack.seed import DEMO_DATABASE, READONLY_CREATION

GROUP = "10. crash safety"
LIMIT = 120.0
"""Give up measuring after this long (the figure is then reported as not met)."""


def run(ctx: Context) -> list[Figure]:
    count = 8 if ctx.quick else 32
    replica = gateway_overrides(ctx.quick)["replica"]
    ttl = float(replica["session_ttl"])
    note = f"{count} leases, session TTL {ttl:g}s, reap grace {replica['reap_grace']:g}s"
    reaped = _reaped(ctx.stack, count)
    restarted = _restarted(ctx.stack, count)
    return [
        Figure(
            name=f"orphan lifetime after SIGKILL (reaper, {count} leases)", value=reaped,
            unit="s", group=GROUP, target=f"<= session TTL + 10 s ({ttl + 10:g} s)",
            met=reaped <= ttl + 10, note=note + "; SIGKILL to the last credential refused",
        ),
        Figure(
            name=f"orphan lifetime after restart (same replica id, {count} leases)",
            value=restarted, unit="s", group=GROUP, target="<= 10 s", met=restarted <= 10,
            note=note + "; restart to the last credential refused",
        ),
    ]  # fmt: skip


class Replica:
    """One extra gateway replica of the stack, in a process of its own."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.workdir = stack.workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config: dict[str, Any] = yaml.safe_load((stack.workdir / "gateway.yaml").read_text())
        self.config["metrics"] = {"listen": ""}
        self.config["audit"] = {"sink": str(self.workdir / "audit.log")}
        self.config.setdefault("replica", {})["id"] = f"bench-{name}-{secrets.token_hex(3)}"
        self.port = 0
        self.process: ManagedProcess | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (again: with the same replica id, on a fresh port)."""
        self.port = free_ports(1)[0]
        self.config["listen"] = self.addr
        path = self.workdir / "gateway.yaml"
        path.write_text(yaml.safe_dump(self.config))
        path.chmod(0o600)
        self.process = ManagedProcess(
            "bench replica",
            [sys.executable, "-m", "latchkey_server", "serve", "--config", str(path)],
            self.workdir / "gateway.log",
        )
        self.process.start()
        self.process.wait_ready(lambda: _grpc_serving(self.addr), 90)

    def kill(self) -> None:
        """SIGKILL (a crash: nothing is revoked, nothing released)."""
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)


def _roles(stack: Stack, count: int) -> list[str]:
    client = hvac.Client(url=stack.vault_addr, token=stack.root_token)
    names = [f"bench-orphan-{secrets.token_hex(3)}-{n}" for n in range(count)]
    for name in names:
        client.secrets.database.create_role(
            name=name, db_name=DEMO_DATABASE, creation_statements=READONLY_CREATION,
            default_ttl="60s", max_ttl="5m",
        )  # fmt: skip
    return names


def _credentials(stack: Stack, addr: str, roles: list[str]) -> list[Any]:
    with grpc.insecure_channel(addr) as channel:
        get = channel.unary_unary(
            "/latchkey.v1.Secrets/GetDatabaseCredentials",
            request_serializer=secrets_pb2.GetDatabaseCredentialsRequest.SerializeToString,
            response_deserializer=secrets_pb2.GetDatabaseCredentialsResponse.FromString,
        )
        return [
            get(
                secrets_pb2.GetDatabaseCredentialsRequest(role=role),
                metadata=stack.metadata,
                timeout=30,
            ).credential
            for role in roles
        ]


def _last_refused(stack: Stack, creds: list[Any], since: float) -> float:
    """Seconds from `since` until none of `creds` logs in (LIMIT when some still do)."""
    assert stack.postgres is not None
    alive = list(creds)
    while alive and time.monotonic() - since < LIMIT:
        alive = [c for c in alive if stack.postgres.can_login(c.username, c.password, "demo")]
        if alive:
            time.sleep(0.1)  # polling interval of the logins
    return time.monotonic() - since if not alive else LIMIT


def _reaped(stack: Stack, count: int) -> float:
    doomed = Replica(stack, "reaped")
    try:
        doomed.start()
        creds = _credentials(stack, doomed.addr, _roles(stack, count))
        killed = time.monotonic()
        doomed.kill()
        return _last_refused(stack, creds, killed)
    finally:
        doomed.stop()


def _restarted(stack: Stack, count: int) -> float:
    replica = Replica(stack, "restarted")
    try:
        replica.start()
        creds = _credentials(stack, replica.addr, _roles(stack, count))
        replica.kill()
        restarted = time.monotonic()
        replica.start()
        return _last_refused(stack, creds, restarted)
    finally:
        replica.stop()
