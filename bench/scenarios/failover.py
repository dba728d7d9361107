"""Figure 10: how long an app's queries go without a working credential when its gateway dies
(issue 13).

An app holds a credential stream (blocking SDK client, addresses: an extra replica first, then
the stack's gateway) feeding a psycopg pool of 4 connections, queried in a loop by 4 threads.
The replica it uses is SIGKILLed: the stream attaches to the stack's gateway, which brokers a
new credential; the pool swaps its connections as on a rotation. The gap runs from the last
query through the killed replica's credential to the first through the new one (negative:
they overlapped); failed queries are counted. The tests (tests/faults/test_failover.py) assert
zero failed queries; here they are reported.
"""

from __future__ import annotations

import threading
import time

import latchkey
from bench.report import Figure
from bench.scenarios import Context
from bench.scenarios.orphans import Replica, _roles
from bench.stack import wait_until
from latchkey.integrations import psycopg as lk_psycopg

GROUP = "11. failover"
WORKERS = 4


def run(ctx: Context) -> list[Figure]:
    stack = ctx.stack
    assert stack.postgres is not None
    (role,) = _roles(stack, 1)
    doomed = Replica(stack, "failover")
    done: list[tuple[float, str]] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()
    try:
        doomed.start()
        addr = f"{doomed.addr},{stack.gateway_addr}"
        dsn = stack.postgres.dsn_for("placeholder", "placeholder", "demo")
        with (
            latchkey.Client(addr, token=stack.token) as client,
            client.database.watch(role) as creds,
            lk_psycopg.pool(creds, dsn, size=WORKERS, open=True) as pool,
        ):

            def query() -> None:
                while not stop.is_set():
                    try:
                        with pool.connection() as conn:
                            conn.execute("SELECT count(*) FROM items").fetchone()
                            user = conn.info.user
                        with lock:
                            done.append((time.monotonic(), user))
                    except Exception as exc:  # counted: the figure
                        with lock:
                            failures.append(type(exc).__name__)

            threads = [threading.Thread(target=query, daemon=True) for _ in range(WORKERS)]
            for thread in threads:
                thread.start()
            old = creds.current.username
            wait_until(lambda: len(done) > 50, 30)
            doomed.kill()
            killed = time.monotonic()
            moved = wait_until(lambda: _through_new(done, lock, old), 60)
            time.sleep(1.0 if ctx.quick else 3.0)  # keep querying on the new credential a while
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    finally:
        stop.set()
        doomed.stop()
    old_times = [t for t, user in done if user == old]
    new_times = [t for t, user in done if user != old]
    if not moved or not old_times or not new_times:
        gap, first = float("nan"), float("nan")
    else:
        gap = (min(new_times) - max(old_times)) * 1000
        first = (min(new_times) - killed) * 1000
    note = f"{WORKERS} threads, psycopg pool of {WORKERS}, {len(done)} queries"
    return [
        Figure(
            name="failover gap (SIGKILL of the app's replica)", value=gap, unit="ms",
            group=GROUP, note=note + "; last query on the old credential to the first on the new",
        ),
        Figure(
            name="failover: SIGKILL to the first query on the new credential", value=first,
            unit="ms", group=GROUP, note=note,
        ),
        Figure(
            name="failover: failed queries", value=float(len(failures)), unit="queries",
            group=GROUP, target="0", met=not failures, note=note,
        ),
    ]  # fmt: skip


def _through_new(done: list[tuple[float, str]], lock: threading.Lock, old: str) -> bool:
    with lock:
        return any(user != old for _, user in done[-20:])
