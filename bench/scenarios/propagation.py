"""Figure 3: Consul KV PUT -> SDK callback, with 1, 100 and 1,000 subscribers on one prefix and
on 100 prefixes; then propagation under churn (bench/scenarios/churn.py).

The floor, measured in the same rounds: a bare blocking query's wake-up (PUT -> the blocking
GET returns, on the same prefixes) plus a bare grpc.aio fan-out (publish -> every one of the
same number of raw streams has the message).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections import Counter

import grpc

from bench import floor, raw
from bench.report import Figure, compared, percentile
from bench.scenarios import Context
from bench.subscribers import FLOOR_ROUND_OFFSET, Subscribers, split

GROUP = "3. propagation (PUT -> SDK callback)"
TARGET = 1.25
MESSAGE_SIZE = 128
ROUND_GAP = 0.12


class _Waker(threading.Thread):
    """A bare blocking query on the case's parent prefix; records when each round shows up."""

    def __init__(self, url: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.deadline = deadline
        self.seen: dict[int, float] = {}
        self.cond = threading.Condition()

    def run(self) -> None:
        index = 0
        while time.monotonic() < self.deadline:
            try:
                with urllib.request.urlopen(  # noqa: S310 (loopback)
                    f"{self.url}?recurse=true&index={index}&wait=5s", timeout=10
                ) as resp:
                    now = time.monotonic()
                    index = int(resp.headers.get("X-Consul-Index", "0"))
                    data = json.loads(resp.read() or b"[]")
            except OSError:
                time.sleep(0.05)
                continue
            import base64

            rounds = [int(base64.b64decode(e["Value"] or b"") or b"0") for e in data]
            with self.cond:
                for r in rounds:
                    self.seen.setdefault(r, now)
                self.cond.notify_all()

    def wait_for(self, round_id: int, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: round_id in self.seen, timeout)
            return self.seen.get(round_id)


_writers = threading.local()


def _put(consul_http: str, key: str, value: str) -> None:
    """PUT a key over this thread's keep-alive connection to Consul (a writer making a
    connection per change would count against Consul's connections per client address, which
    the gateway's own connections share here). A reused connection the agent closed meanwhile
    is replaced once; the PUT is idempotent."""
    for attempt in (1, 2):
        conn = _connection(consul_http)
        try:
            conn.request("PUT", f"/v1/kv/{key}", body=value.encode())
            resp = conn.getresponse()
            resp.read()
        except (ConnectionError, http.client.HTTPException):
            conn.close()
            _writers.conns.pop(consul_http, None)
            if attempt == 2:
                raise
            continue
        if resp.status != 200:
            raise RuntimeError(f"consul PUT {key}: HTTP {resp.status}")
        return


def _connection(consul_http: str) -> http.client.HTTPConnection:
    conns: dict[str, http.client.HTTPConnection] = _writers.__dict__.setdefault("conns", {})
    conn = conns.get(consul_http)
    if conn is None:
        host, _, port = consul_http.rpartition(":")
        conn = conns[consul_http] = http.client.HTTPConnection(host, int(port), timeout=10)
    return conn


def cases(quick: bool) -> list[tuple[int, int]]:
    if quick:
        return [(1, 1), (100, 1), (100, 100)]
    return [(1, 1), (100, 1), (100, 100), (1000, 1), (1000, 100)]


def run(ctx: Context) -> list[Figure]:
    from bench.scenarios import churn

    figures: list[Figure] = []
    subs = Subscribers(2)
    try:
        for case, (n_subs, n_prefixes) in enumerate(cases(ctx.quick)):
            figures += _case(ctx, subs, case, n_subs, n_prefixes)
        figures += churn.run(ctx, subs)
    finally:
        subs.close()
    return figures


def _case(ctx: Context, subs: Subscribers, case: int, n_subs: int, n_prefixes: int) -> list[Figure]:
    stack = ctx.stack
    rounds = 10 if ctx.quick else 30
    wait = 2.0 if ctx.quick else 5.0  # a callback later than this counts as `wait` (a lower bound)
    parent = f"bench/prop/c{case}/"
    prefixes = [f"{parent}p{j}/" for j in range(n_prefixes)]
    for prefix in prefixes:
        _put(stack.consul_http, prefix + "k", "0")
    assigned = [prefixes[i % n_prefixes] for i in range(n_subs)]
    per_worker = split(assigned, subs.count)
    expected = [Counter(mine) for mine in per_worker]
    replies = subs.call(
        "sdk_config", [{"prefixes": mine} for mine in per_worker],
        addr=stack.gateway_addr, token=stack.token,
    )  # fmt: skip
    opened = sum(r["watches"] for r in replies)
    fanout = max(1, n_subs // n_prefixes)
    subs.call(
        "raw", [{"requests": [b""] * len(mine)} for mine in split(list(range(fanout)), subs.count)],
        addr=stack.floor_addr, method=floor.STREAM, floor=True, channels=2,
    )  # fmt: skip
    with grpc.insecure_channel(stack.floor_addr) as channel:
        count = raw.unary(channel, floor.COUNT)
        publish = raw.unary(channel, floor.PUBLISH)
        deadline = time.monotonic() + 30
        while int.from_bytes(count(b"", timeout=5), "big") < fanout and time.monotonic() < deadline:
            time.sleep(0.05)
        waker = _Waker(f"http://{stack.consul_http}/v1/kv/{parent}", time.monotonic() + 600)
        waker.start()
        time.sleep(0.3)
        put_at: dict[int, float] = {}
        wake: list[float] = []
        pub_at: dict[int, float] = {}
        missed = 0
        for r in range(1, rounds + 1):
            prefix = prefixes[r % n_prefixes]
            put_at[r] = time.monotonic()
            _put(stack.consul_http, prefix + "k", str(r))
            woke = waker.wait_for(r, wait)
            if woke is not None:
                wake.append(woke - put_at[r])
            replies = subs.call(
                "wait_round", [{"expected": e[prefix]} for e in expected], round_id=r, wait=wait,
            )  # fmt: skip
            missed += sum(
                max(0, e[prefix] - rep["got"]) for e, rep in zip(expected, replies, strict=False)
            )
            payload = r.to_bytes(4, "big") + b"\x00" * (MESSAGE_SIZE - 4)
            pub_at[r] = time.monotonic()
            publish(payload, timeout=10)
            subs.call(
                "wait_round", [{"expected": len(m)} for m in split(list(range(fanout)), subs.count)],  # noqa: E501
                round_id=FLOOR_ROUND_OFFSET + r, wait=wait,
            )  # fmt: skip
            # Rounds at least a watch's minimum interval apart (100 ms + dither), so each
            # figure is an isolated change's propagation (churn has its own scenario).
            time.sleep(max(0.0, ROUND_GAP - (time.monotonic() - put_at[r])))
        waker.deadline = 0
    collected = subs.call("collect")
    subs.call("close")
    prop: list[float] = []
    bare: list[float] = []
    for reply in collected:
        for round_id, times in reply["receipts"].items():
            rid = int(round_id)
            if rid >= FLOOR_ROUND_OFFSET:
                start = pub_at.get(rid - FLOOR_ROUND_OFFSET)
                bare.extend(t - start for t in times if start is not None)
            elif rid in put_at:
                prop.extend(min(wait, t - put_at[rid]) for t in times)
    prop.extend([wait] * missed)  # missed callbacks count as `wait` seconds (a lower bound)
    label = f"{n_subs} sub{'s' if n_subs > 1 else ''} / {n_prefixes} prefix{'es' if n_prefixes > 1 else ''}"  # noqa: E501
    ms = 1000.0
    floor50 = (percentile(wake, 50) + percentile(bare, 50)) * ms
    floor99 = (percentile(wake, 99) + percentile(bare, 99)) * ms
    p99 = percentile(prop, 99) * ms
    largest = n_subs == max(n for n, _ in cases(ctx.quick))
    note = (
        f"watches {opened}/{n_subs}, missed callbacks {missed}; floor = wake-up "
        f"p50 {percentile(wake, 50) * ms:.2f}/p99 {percentile(wake, 99) * ms:.2f} ms + bare "
        f"fan-out to {fanout} p50 {percentile(bare, 50) * ms:.2f}/p99 {percentile(bare, 99) * ms:.2f} ms"  # noqa: E501
    )
    return [
        compared(
            f"propagation p50 ({label})", percentile(prop, 50) * ms, "ms",
            "wake-up + bare fan-out p50", floor50, group=GROUP, note=note,
        ),
        compared(
            f"propagation p99 ({label})", p99, "ms", "wake-up + bare fan-out p99", floor99,
            group=GROUP, target=f"<= {TARGET}x" if largest else None,
            met=(p99 <= TARGET * floor99) if largest else None,
        ),
    ]  # fmt: skip
