"""Figure 6: credential issuance and rotation.

- Time to first credential (a cache miss: a role the gateway has not issued yet) through the
  gateway versus hvac's direct `database/creds/<role>` call, alternating, on fresh roles.
- Rotation soak: the SDK's rotating credential feeding a psycopg pool of 4 connections, 4
  threads querying in a loop, until 5 rotations have happened; failed queries are reported.
"""

from __future__ import annotations

import threading
import time

import grpc
import hvac

from bench.report import Figure, compared, percentile
from bench.scenarios import Context
from bench.stack import ROTATING_ROLE
from latchkey.v1 import secrets_pb2
from latchkey_server.devstack.seed import DEMO_DATABASE, READONLY_CREATION

GROUP = "6. credential issuance and rotation"
ROTATIONS = 5


def run(ctx: Context) -> list[Figure]:
    return _first_credential(ctx) + _rotation_soak(ctx)


def _first_credential(ctx: Context) -> list[Figure]:
    stack = ctx.stack
    client = hvac.Client(url=stack.vault_addr, token=stack.root_token)
    count = 4 if ctx.quick else 12
    gateway_ms: list[float] = []
    direct_ms: list[float] = []
    with grpc.insecure_channel(stack.gateway_addr) as channel:
        get: grpc.UnaryUnaryMultiCallable[secrets_pb2.GetDatabaseCredentialsRequest, bytes] = (
            channel.unary_unary(
                "/latchkey.v1.Secrets/GetDatabaseCredentials",
                request_serializer=secrets_pb2.GetDatabaseCredentialsRequest.SerializeToString,
            )
        )
        for i in range(count):
            gw_role, direct_role = f"bench-miss-gw-{i}", f"bench-miss-direct-{i}"
            for role in (gw_role, direct_role):
                client.secrets.database.create_role(
                    name=role, db_name=DEMO_DATABASE, creation_statements=READONLY_CREATION,
                    default_ttl="60s", max_ttl="120s",
                )  # fmt: skip
            t0 = time.perf_counter()
            get(
                secrets_pb2.GetDatabaseCredentialsRequest(role=gw_role),
                metadata=stack.metadata,
                timeout=30,
            )
            gateway_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            client.secrets.database.generate_credentials(direct_role)
            direct_ms.append((time.perf_counter() - t0) * 1000)
    return [
        compared(
            "time to first credential p50 (cache miss)", percentile(gateway_ms, 50), "ms",
            "hvac creds p50", percentile(direct_ms, 50), group=GROUP, note=f"{count} fresh roles each",  # noqa: E501
        ),
        compared(
            "time to first credential max (cache miss)", max(gateway_ms), "ms", "hvac creds max",
            max(direct_ms), group=GROUP,
        ),
    ]  # fmt: skip


def _rotation_soak(ctx: Context) -> list[Figure]:
    import latchkey
    from latchkey.integrations import psycopg as lk_psycopg

    stack = ctx.stack
    assert stack.db is not None
    conninfo = f"host={stack.db.host} port={stack.db.port} dbname={DEMO_DATABASE}"
    rotations = [0]
    failures: list[str] = []
    queries = [0]
    lock = threading.Lock()
    limit = 90.0
    with latchkey.Client(stack.gateway_addr, token=stack.token, insecure=True) as client:  # noqa: SIM117 (three scopes, each with its own lifetime)
        with client.database.watch(ROTATING_ROLE) as creds:
            creds.on_rotate(lambda new: rotations.__setitem__(0, rotations[0] + 1))
            with lk_psycopg.pool(creds, conninfo, size=4, open=True) as pool:
                stop_at = time.monotonic() + limit

                def worker() -> None:
                    while time.monotonic() < stop_at and rotations[0] < ROTATIONS:
                        try:
                            with pool.connection(timeout=10) as conn:
                                conn.execute("SELECT count(*) FROM items").fetchone()
                            with lock:
                                queries[0] += 1
                        except Exception as exc:
                            with lock:
                                failures.append(repr(exc)[:200])
                            time.sleep(0.01)

                t0 = time.monotonic()
                threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=limit + 30)
                soak = time.monotonic() - t0
    note = f"{queries[0]} queries over {soak:.0f}s, {rotations[0]} rotations (role max TTL 6s)" + (
        f"; first failure: {failures[0]}" if failures else ""
    )
    return [
        Figure(
            name=f"rotation soak: failed queries (pool of 4, {ROTATIONS} rotations)",
            value=float(len(failures)), unit="queries", group=GROUP, target="0",
            met=not failures and rotations[0] >= ROTATIONS, note=note,
        )
    ]  # fmt: skip
