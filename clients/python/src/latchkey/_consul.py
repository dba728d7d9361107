"""Gateway replicas from Consul: `consul://AGENT/SERVICE` addresses and the health query.

`LATCHKEY_ADDR=consul://127.0.0.1:8500/latchkey` asks the Consul agent at `127.0.0.1:8500`
(any agent's HTTP API) for the passing instances of service `latchkey`, which every gateway
replica registers; they are the client's failover list, kept current by a blocking query
(`_async/_replicas.py` runs it). Query parameters: `scheme=https` (the agent's API over TLS,
verified with the system's roots), `dc=NAME`, `tag=TAG`. The agent's ACL token comes from
`LATCHKEY_CONSUL_TOKEN` (never from the address, which ends up in logs and reprs).

One HTTP GET over the standard library's `http.client` (the SDK depends on grpcio, protobuf and
pydantic only), run in a thread by the async client and inline by the blocking one; `abort()`
shuts the socket so a blocked query ends at once on close.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from latchkey._errors import ConfigurationError, Unavailable

SCHEME = "consul://"
WAIT = 30.0
"""Blocking-query wait, seconds (the agent adds up to 1/16 of jitter)."""


@dataclass(frozen=True)
class ConsulReplicas:
    """Where to find the gateway's replicas: a service in Consul."""

    agent: str
    """`host:port` of a Consul agent's HTTP API."""
    service: str = "latchkey"
    https: bool = False
    datacenter: str = ""
    tag: str = ""
    token: str | None = field(default=None, repr=False)
    """ACL token (`LATCHKEY_CONSUL_TOKEN`)."""

    def describe(self) -> str:
        return f"consul://{self.agent}/{self.service}"


def is_consul(addr: str) -> bool:
    return addr.strip().startswith(SCHEME)


def parse(addr: str, token: str | None = None) -> ConsulReplicas:
    """`consul://HOST:PORT/SERVICE[?scheme=https&dc=DC&tag=TAG]`."""
    text = addr.strip()
    parts = urlsplit(text)
    service = parts.path.strip("/")
    if not parts.netloc or not service or "/" in service:
        raise ConfigurationError(
            f"{text!r} is not a Consul address: write consul://AGENT/SERVICE, e.g. "
            "consul://127.0.0.1:8500/latchkey (AGENT is a Consul agent's HTTP host:port)"
        )
    if parts.username or parts.password:
        raise ConfigurationError(
            "put no credentials in a consul:// address: the Consul token goes in "
            "LATCHKEY_CONSUL_TOKEN"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - {"scheme", "dc", "tag"}
    if unknown:
        raise ConfigurationError(
            f"unknown parameter(s) {sorted(unknown)} in {text!r}: consul:// addresses take "
            "scheme (http or https), dc and tag"
        )
    scheme = query.get("scheme", "http")
    if scheme not in ("http", "https"):
        raise ConfigurationError(f"scheme={scheme!r} in {text!r}: use http or https")
    agent = parts.netloc if ":" in parts.netloc.rsplit("]", 1)[-1] else f"{parts.netloc}:8500"
    return ConsulReplicas(
        agent=agent, service=service, https=scheme == "https", datacenter=query.get("dc", ""),
        tag=query.get("tag", ""), token=token or None,
    )  # fmt: skip


def targets(body: Any) -> list[str]:
    """`host:port` of each instance in a `/v1/health/service` answer (the service's address,
    else its node's), sorted."""
    if not isinstance(body, list):
        raise Unavailable("the Consul agent sent an unexpected health answer", retry_after=1.0)
    out: set[str] = set()
    for item in body:
        service = item.get("Service") if isinstance(item, dict) else None
        node = item.get("Node") if isinstance(item, dict) else None
        if not isinstance(service, dict):
            continue
        host = service.get("Address") or (node.get("Address") if isinstance(node, dict) else "")
        port = service.get("Port")
        if not host or not isinstance(port, int) or port <= 0:
            continue
        out.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return sorted(out)


class PassingQuery:
    """The blocking health query for one service (one request at a time)."""

    def __init__(self, replicas: ConsulReplicas) -> None:
        self.replicas = replicas
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = False

    def fetch(self, index: int, wait: float = WAIT) -> tuple[int, list[str]]:
        """The passing instances once the index moves past `index` (at once for 0), with the
        new index. Raises `Unavailable` when the agent cannot be asked or answers an error."""
        r = self.replicas
        params: dict[str, str] = {"passing": "1"}
        if r.datacenter:
            params["dc"] = r.datacenter
        if r.tag:
            params["tag"] = r.tag
        if index > 0:
            params["index"] = str(index)
            params["wait"] = f"{max(1, round(wait * 1000))}ms"
        path = f"/v1/health/service/{quote(r.service, safe='')}?{urlencode(params)}"
        headers = {"Accept": "application/json"}
        if r.token:
            headers["X-Consul-Token"] = r.token
        timeout = wait + wait / 16 + 5.0
        kind = http.client.HTTPSConnection if r.https else http.client.HTTPConnection
        conn = kind(r.agent, timeout=timeout)
        try:
            conn.connect()
            with self._lock:  # connected first, so that abort() finds the socket to shut
                if self._aborted:
                    raise Unavailable("the client is closed", retry_after=None)
                self._conn = conn
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(
                f"the Consul agent at {r.agent} ({r.describe()}) cannot be reached: "
                f"{type(exc).__name__}; check the address and that the agent runs",
                retry_after=1.0,
            ) from exc
        finally:
            with self._lock:
                self._conn = None
            conn.close()
        if resp.status != 200:
            hint = " (check LATCHKEY_CONSUL_TOKEN)" if resp.status in (401, 403) else ""
            raise Unavailable(
                f"the Consul agent at {r.agent} answered HTTP {resp.status} to the health "
                f"query of service {r.service!r}{hint}",
                retry_after=1.0,
            )
        try:
            new_index = int(resp.getheader("X-Consul-Index") or 0)
            body = json.loads(data)
        except ValueError as exc:
            raise Unavailable(
                "the Consul agent sent an unreadable health answer", retry_after=1.0
            ) from exc
        return new_index, targets(body)

    def abort(self) -> None:
        """End a query in flight and refuse new ones (close)."""
        with self._lock:
            self._aborted = True
            conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
