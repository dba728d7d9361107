"""The Consul upstream adapter: the only module that speaks Consul's HTTP API.

Brokers depend on the narrow protocols of `consul_port.py`; `ConsulAdapter` implements them
over one shared aiohttp session with a hard connection budget and one request budget (a token
bucket shared fairly by every request, `_consul_budget.py`). Every failure leaves this module
as a domain error: `ConsulUnavailable` (a `Unavailable`), `NotFound` or `InvalidArgument`.
Arguments are not validated here: the transport validates them at the edge.

Consul 1.8.7 facts this module relies on (see shared/reference/consul-notes.md):
- `X-Consul-Index` is an integer; a 404 on a KV read still carries it.
- A blocking query holds one HTTP/1.1 connection; the agent silently drops the 201st connection
  from one client IP, so the adapter never opens more than `connection_budget` connections and
  keeps a reserve of them for non-blocking reads.
- The server adds up to wait/16 of jitter, so the read timeout is wait + wait/16 + a margin.
"""

# Why not python-consul2: it is synchronous (one thread per blocking query), returns
# X-Consul-Index as a string and hides X-Consul-KnownLeader/LastContact, and its aio adapter
# opens a new ClientSession per request (consul-notes §9). So we speak HTTP with aiohttp here.

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn
from urllib.parse import quote

import aiohttp

from latchkey_server.errors import InvalidArgument, NotFound
from latchkey_server.models import ConfigEntry, Instance, utcnow
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.observability.tracing import child_span, set_attributes
from latchkey_server.upstreams._consul_budget import BudgetStats, RequestBudget
from latchkey_server.upstreams._consul_parse import (
    ConsulSaturated,
    ConsulUnavailable,
    Reply,
    check_state,
    classify_checks,
    decode_json,
    decode_list,
    entry,
    go_duration,
    instance,
    int_header,
    key_version,
    read_timeout_for,
)
from latchkey_server.upstreams.consul_port import CheckState, WatchSlots

log = logging.getLogger(__name__)

__all__ = [
    "CheckState",
    "ConsulAdapter",
    "ConsulConfig",
    "ConsulSaturated",
    "ConsulUnavailable",
    "classify_checks",
    "go_duration",
    "read_timeout_for",
]

OP_KV_GET = "kv_get"
OP_KV_LIST = "kv_list"
OP_KV_TREE = "kv_tree"
OP_HEALTH = "health_service"
OP_HEALTH_STATE = "health_state"


@dataclass(frozen=True, slots=True)
class ConsulConfig:
    """How the adapter reaches Consul. Built by the caller; the environment is never read."""

    address: str = "http://127.0.0.1:8500"
    """Agent HTTP address: `http(s)://host:port` or `host:port`."""
    token: str | None = field(default=None, repr=False)
    """ACL token sent as `X-Consul-Token`; `CONSUL_HTTP_TOKEN` is deliberately ignored."""
    connection_budget: int = 64
    """Hard cap on simultaneous connections to the agent (1.8.7 drops the 201st per IP)."""
    blocking_reserve: int = 0
    """Connections kept for plain reads, never used by blocking queries (0: budget // 8, at
    least 1). Blocking queries get the rest of the budget."""
    default_wait: float = 55.0
    """`wait` used when a blocking query gives an index without a wait."""
    connect_timeout: float = 5.0
    """Seconds to open a TCP connection."""
    pool_timeout: float = 10.0
    """Seconds a plain read waits for a free connection of the read reserve (then it fails
    with `ConsulSaturated`, which says nothing about Consul's reachability)."""
    request_timeout: float = 10.0
    """Read timeout of non-blocking requests."""
    timeout_margin: float = 5.0
    """Added to wait + wait/16 for the read timeout of blocking queries."""
    max_stale: float = 10.0
    """Health reads use `?stale`; if the answering server lost the leader longer ago than
    this (X-Consul-LastContact) or knows no leader, the read is repeated in default mode."""
    shared_reserve: int = 2
    """Blocking slots kept for shared overflow queries (one KV, one health per datacenter)."""
    requests_per_second: float = 500.0
    """The request budget: requests per second to the agent, all requests together (blocking
    re-reads, shared queries, plain reads, pings), shared fairly between targets. 0: none."""
    burst: int = 100
    """Requests the budget lets through back to back before pacing them."""


class ConsulAdapter:
    """`SharedWatchUpstream` over aiohttp: one session, a request budget, a connection budget,
    counters.

    Every request first takes a token of the request budget (`requests_per_second`, fair
    between targets; see `_consul_budget.py`). The connection budget is split in two, so that
    a plain read never waits behind blocking queries: blocking queries take at most
    `blocking_capacity` connections (they queue for a slot, with no timeout, as they would
    anyway wait long for an answer), plain reads take the rest (the read reserve; they give up
    after `pool_timeout` with `ConsulSaturated`, as they do waiting for a token). The two
    semaphores sum to the connector's limit, so the connector itself never queues and its
    connect timeout only ever measures a real TCP connect.

    Create it anywhere; the session is opened inside the running loop on first use. Close it
    with `close()` (or `async with`).
    """

    def __init__(
        self, settings: ConsulConfig | None = None, *, telemetry: Telemetry | None = None
    ) -> None:
        self.settings = settings or ConsulConfig()
        self._requests = (telemetry or Telemetry()).upstream_requests
        address = self.settings.address.rstrip("/")
        if "://" not in address:
            address = f"http://{address}"
        self._base = address
        budget = self.settings.connection_budget
        if budget < 2:
            raise ValueError("connection_budget must be at least 2")
        reserve = self.settings.blocking_reserve or max(1, budget // 8)
        reserve = min(max(1, reserve), budget - 1)
        self._blocking_capacity = budget - reserve
        self._read_reserve = reserve
        self._blocking_slots = asyncio.Semaphore(self._blocking_capacity)
        self._read_slots = asyncio.Semaphore(reserve)
        self._watch_slots = WatchSlots(self._blocking_capacity, self.settings.shared_reserve)
        self._budget = RequestBudget(self.settings.requests_per_second, self.settings.burst)
        self._headers: dict[str, str] = {"Accept": "application/json"}
        if self.settings.token:
            self._headers["X-Consul-Token"] = self.settings.token
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.requests_started: Counter[str] = Counter()
        """Upstream requests started, per operation (`kv_get`, `kv_list`, `kv_tree`,
        `health_service`, `health_state`)."""
        self.saturations = 0
        """Plain reads that gave up waiting for a connection of the read reserve."""
        self._in_flight: Counter[str] = Counter()
        self._in_flight_by_target: Counter[tuple[str, str]] = Counter()
        self._reachable = True
        self._last_contact: datetime | None = None

    # ------------------------------------------------------------------ lifecycle and counters

    @property
    def name(self) -> str:
        return "consul"

    @property
    def reachable(self) -> bool:
        """Whether the most recent request that reached the network got an answer."""
        return self._reachable

    @property
    def last_contact(self) -> datetime | None:
        """When the agent last answered (any HTTP status counts as contact)."""
        return self._last_contact

    async def __aenter__(self) -> ConsulAdapter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def connection_budget(self) -> int:
        return self.settings.connection_budget

    @property
    def blocking_capacity(self) -> int:
        """How many blocking queries may run at once (the budget minus the read reserve)."""
        return self._blocking_capacity

    @property
    def read_reserve(self) -> int:
        """Connections only plain reads use."""
        return self._read_reserve

    @property
    def watch_slots(self) -> WatchSlots:
        return self._watch_slots

    def budget(self) -> BudgetStats:
        """The request budget now (rate, tokens, waiting requests, counters), for metrics."""
        return self._budget.stats()

    @property
    def overflow_watches(self) -> int:
        """Watches covered by a shared blocking query instead of one of their own."""
        return self._watch_slots.overflow

    @property
    def requests_in_flight(self) -> int:
        """Requests started and not finished; each holds (or waits for) one connection."""
        return sum(self._in_flight.values())

    def in_flight(self, op: str, target: str | None = None) -> int:
        """Requests in flight for one operation, optionally for one prefix/key/service."""
        if target is None:
            return self._in_flight[op]
        return self._in_flight_by_target[(op, target)]

    @property
    def connections_open(self) -> int:
        """Connections currently checked out of the pool (best effort, for metrics)."""
        connector = self._session.connector if self._session else None
        if connector is None:
            return 0
        acquired = getattr(connector, "_acquired", None)
        return len(acquired) if acquired is not None else 0

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ConsulUnavailable("the Consul adapter is closed", retry_after=None)
        if self._session is None:
            budget = self.settings.connection_budget
            connector = aiohttp.TCPConnector(limit=budget, limit_per_host=budget)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                trust_env=False,  # no proxies or netrc from the environment
                raise_for_status=False,
            )
        return self._session

    # ------------------------------------------------------------------ the API

    async def ping(self) -> None:
        """A cheap read (the agent's view of the leader) that refreshes reachability."""
        self._check_status(
            "status", await self._get("status", "leader", "/v1/status/leader", {}, None, None)
        )

    async def kv_get(self, key: str) -> tuple[int, ConfigEntry]:
        reply = await self._get(OP_KV_GET, key, f"/v1/kv/{quote(key, safe='/')}", {}, None, None)
        if reply.status == 404:
            raise NotFound(f"config key {key!r} does not exist")
        data = decode_json(reply)
        if not isinstance(data, list) or not data:
            raise NotFound(f"config key {key!r} does not exist")
        return reply.index, entry(data[0])

    async def kv_list(
        self, prefix: str, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[ConfigEntry]]:
        path = f"/v1/kv/{quote(prefix, safe='/')}"
        reply = await self._get(OP_KV_LIST, prefix, path, {"recurse": ""}, index, wait)
        if reply.status == 404:
            return reply.index, []
        entries = sorted((entry(item) for item in decode_list(reply, "KV list")), key=_by_key)
        return reply.index, entries

    async def kv_tree(
        self, prefix: str, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[tuple[str, int]]]:
        # `?keys` would be lighter but cannot reveal a modified value; `recurse` carries each
        # key's ModifyIndex. Values are parsed as JSON but never decoded nor kept.
        path = f"/v1/kv/{quote(prefix, safe='/')}"
        reply = await self._get(OP_KV_TREE, prefix, path, {"recurse": ""}, index, wait)
        if reply.status == 404:
            return reply.index, []
        return reply.index, sorted(key_version(item) for item in decode_list(reply, "KV list"))

    async def health_service(
        self,
        service: str,
        *,
        tag: str = "",
        datacenter: str = "",
        index: int | None = None,
        wait: float | None = None,
    ) -> tuple[int, list[Instance]]:
        target = f"{service}|{tag}|{datacenter}"
        path = f"/v1/health/service/{quote(service, safe='')}"
        params: dict[str, str] = {}
        if tag:
            params["tag"] = tag
        if datacenter:
            params["dc"] = datacenter
        reply = await self._stale_get(OP_HEALTH, target, path, params, index, wait)
        if reply.status == 404:
            return reply.index, []
        data = decode_list(reply, "health")
        instances = sorted((instance(item) for item in data), key=lambda i: (i.node, i.id))
        return reply.index, instances

    async def health_state(
        self, *, datacenter: str = "", index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[CheckState]]:
        params = {"dc": datacenter} if datacenter else {}
        path = "/v1/health/state/any"
        reply = await self._stale_get(OP_HEALTH_STATE, datacenter, path, params, index, wait)
        if reply.status == 404:
            return reply.index, []
        return reply.index, sorted(check_state(item) for item in decode_list(reply, "health"))

    # ------------------------------------------------------------------ HTTP

    async def _stale_get(
        self,
        op: str,
        target: str,
        path: str,
        params: dict[str, str],
        index: int | None,
        wait: float | None,
    ) -> Reply:
        reply = await self._get(op, target, path, {**params, "stale": ""}, index, wait)
        too_stale = reply.last_contact_ms > self.settings.max_stale * 1000
        if reply.status == 200 and (not reply.known_leader or too_stale):
            # A stale server may answer with old (even empty) data; confirm with the leader.
            reply = await self._get(op, target, path, params, None, None)
        return reply

    @contextlib.asynccontextmanager
    async def _tracked(self, op: str, target: str) -> AsyncIterator[None]:
        self.requests_started[op] += 1
        self._in_flight[op] += 1
        self._in_flight_by_target[(op, target)] += 1
        try:
            yield
        finally:
            self._in_flight[op] -= 1
            self._in_flight_by_target[(op, target)] -= 1
            if self._in_flight_by_target[(op, target)] <= 0:
                del self._in_flight_by_target[(op, target)]

    async def _token(self, op: str, target: str, blocking: bool) -> None:
        """A token of the request budget (plain reads give up after `pool_timeout`)."""
        if blocking:
            await self._budget.acquire((op, target))
            return
        try:
            async with asyncio.timeout(self.settings.pool_timeout):
                await self._budget.acquire((op, target))
        except TimeoutError:
            self._saturated(op, "request budget")

    def _saturated(self, op: str, what: str) -> NoReturn:
        # Our own congestion, not Consul's silence, so reachability stays as it is.
        self.saturations += 1
        self._requests.labels("consul", op, "error").inc()
        log.warning("consul %s: the %s stayed busy; giving up", op, what)
        raise ConsulSaturated(
            f"the gateway's Consul {what} is saturated; retry", retry_after=1.0
        ) from None

    @contextlib.asynccontextmanager
    async def _slot(self, op: str, blocking: bool) -> AsyncIterator[None]:
        if blocking:
            async with self._blocking_slots:
                yield
            return
        try:
            async with asyncio.timeout(self.settings.pool_timeout):
                await self._read_slots.acquire()
        except TimeoutError:
            self._saturated(op, "connection budget")
        try:
            yield
        finally:
            self._read_slots.release()

    async def _get(
        self,
        op: str,
        target: str,
        path: str,
        params: dict[str, str],
        index: int | None,
        wait: float | None,
        *,
        method: str = "GET",
        body: bytes | None = None,
        accept: tuple[int, ...] = (200, 404),
    ) -> Reply:
        """The one request path (the budget, timeouts, reachability, metrics). Other methods
        and statuses are for the session calls of `_consul_sessions.py`."""
        session = self._ensure_session()
        blocking = method == "GET" and bool(index and index > 0)
        query = dict(params)
        if blocking:
            wait = self.settings.default_wait if wait is None else wait
            query["index"] = str(index)
            query["wait"] = go_duration(wait)
            read_timeout = read_timeout_for(wait, self.settings.timeout_margin)
        else:
            read_timeout = self.settings.request_timeout
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.pool_timeout,
            sock_connect=self.settings.connect_timeout,
            sock_read=read_timeout,
        )
        await self._token(op, target, blocking)
        async with self._tracked(op, target), self._slot(op, blocking):
            # The span names the operation only: keys, prefixes and services stay out of it.
            span_cm = child_span(
                "consul " + op,
                {"latchkey.upstream": "consul", "latchkey.operation": op,
                 "http.request.method": method, "latchkey.blocking": blocking},
            )  # fmt: skip
            try:
                with span_cm as span:
                    reply = await self._send(session, method, path, query, body, timeout)
                    set_attributes(span, {"http.response.status_code": reply.status})
            except TimeoutError as exc:
                self._reachable = False
                self._requests.labels("consul", op, "error").inc()
                log.warning("consul %s timed out", op)
                raise ConsulUnavailable("Consul did not answer in time") from exc
            except (aiohttp.ClientError, OSError) as exc:
                self._reachable = False
                self._requests.labels("consul", op, "error").inc()
                log.warning("consul %s failed: %s", op, type(exc).__name__)
                raise ConsulUnavailable("Consul is unreachable") from exc
        self._reachable = True
        self._last_contact = utcnow()
        outcome = "ok" if reply.status in accept else "error"
        self._requests.labels("consul", op, outcome).inc()
        return self._check_status(op, reply, accept)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        query: dict[str, str],
        body: bytes | None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> Reply:
        async with session.request(
            method, self._base + path, params=query, data=body, timeout=client_timeout,
            allow_redirects=False,
        ) as resp:  # fmt: skip
            return Reply(
                status=resp.status,
                index=int_header(resp.headers, "X-Consul-Index"),
                known_leader=resp.headers.get("X-Consul-KnownLeader", "true") == "true",
                last_contact_ms=int_header(resp.headers, "X-Consul-LastContact"),
                body=await resp.read(),
            )

    @staticmethod
    def _check_status(op: str, reply: Reply, accept: tuple[int, ...] = (200, 404)) -> Reply:
        status = reply.status
        if status in accept:
            return reply
        log.warning("consul %s answered HTTP %d", op, status)
        if status == 400:
            raise InvalidArgument("Consul rejected the request as malformed (HTTP 400)")
        if status in (401, 403):
            raise ConsulUnavailable(
                f"Consul denied the gateway's request (HTTP {status}); check its ACL token",
                retry_after=5.0,
                http_status=status,
            )
        raise ConsulUnavailable(
            f"Consul answered HTTP {status}", retry_after=1.0, http_status=status
        )


def _by_key(item: ConfigEntry) -> str:
    return item.key
