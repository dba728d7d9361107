"""Consul sessions and the KV writes tied to them (`SessionStore` of `session_port.py`).

A private sibling of `consul.py`: every request goes through the adapter's one request path
(`ConsulAdapter._get`), so it takes its connection from the same budget (plain reads and writes
from the read reserve, blocking reads from the blocking slots), with the same timeouts,
reachability and metrics (`op` labels `session_*` and `kv_*`).

Consul 1.8.7 answers (shared/reference/consul-notes.md, and probed): `PUT /v1/session/create`
with a TTL below the servers' `session_ttl_min` is a 500 "Invalid Session TTL"; acquiring with
a session that is gone is a 500 'invalid session "..."'; renewing one is a 404. A session is
invalidated up to twice its TTL after its last renewal. The default lock delay (15 s) would keep
a dead replica's keys locked after its session died: every session here has none.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import quote

from latchkey_server.errors import FailedPrecondition
from latchkey_server.upstreams._consul_parse import (
    ConsulUnavailable,
    Reply,
    check_key,
    decode_json,
    decode_list,
    go_duration,
)
from latchkey_server.upstreams.consul import ConsulAdapter
from latchkey_server.upstreams.session_port import KvRecord, SessionGone

_OK = (200,)
_OK_OR_MISSING = (200, 404)
_OK_OR_SERVER_ERROR = (200, 500)


def _record(raw: Any) -> KvRecord:
    if not isinstance(raw, dict) or "Key" not in raw:
        raise ConsulUnavailable("Consul sent an unexpected KV item shape")
    value_b64 = raw.get("Value")
    try:
        value = base64.b64decode(value_b64, validate=True) if value_b64 else b""
    except (binascii.Error, TypeError) as exc:
        raise ConsulUnavailable("Consul sent a KV value that is not base64") from exc
    return KvRecord(
        key=str(raw["Key"]),
        value=value,
        modify_index=int(raw.get("ModifyIndex") or 0),
        session=str(raw.get("Session") or ""),
    )


def _text(reply: Reply) -> str:
    return reply.body.decode(errors="replace").strip()[:200]


def _kv_path(key: str) -> str:
    check_key("key", key)
    return f"/v1/kv/{quote(key, safe='/')}"


class ConsulSessions:
    """`SessionStore` over a `ConsulAdapter`."""

    def __init__(self, consul: ConsulAdapter) -> None:
        self._consul = consul

    async def _send(
        self,
        op: str,
        target: str,
        path: str,
        *,
        method: str = "PUT",
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        accept: tuple[int, ...] = _OK,
        index: int | None = None,
        wait: float | None = None,
    ) -> Reply:
        return await self._consul._get(
            op, target, path, params or {}, index, wait, method=method, body=body, accept=accept
        )

    async def create_session(self, name: str, ttl: float) -> str:
        body = json.dumps(
            {"Name": name, "TTL": go_duration(ttl), "LockDelay": "0s", "Behavior": "release"}
        ).encode()
        reply = await self._send(
            "session_create", name, "/v1/session/create", body=body, accept=_OK_OR_SERVER_ERROR
        )
        if reply.status == 500:
            text = _text(reply)
            if "TTL" in text:
                raise FailedPrecondition(
                    f"Consul refuses a session TTL of {ttl:g}s ({text}): set replica.session_ttl "
                    "within the Consul servers' session_ttl_min (10s unless configured) and 24h"
                )
            raise ConsulUnavailable(f"Consul could not create a session: {text}", http_status=500)
        data = decode_json(reply)
        if not isinstance(data, dict) or not data.get("ID"):
            raise ConsulUnavailable("Consul sent an unexpected session shape")
        return str(data["ID"])

    async def renew_session(self, session: str) -> bool:
        path = f"/v1/session/renew/{quote(session, safe='')}"
        reply = await self._send("session_renew", session, path, accept=_OK_OR_MISSING)
        return reply.status == 200

    async def destroy_session(self, session: str) -> None:
        path = f"/v1/session/destroy/{quote(session, safe='')}"
        await self._send("session_destroy", session, path)

    async def acquire(self, key: str, value: bytes, session: str) -> bool:
        reply = await self._send(
            "kv_acquire", key, _kv_path(key), params={"acquire": session}, body=value,
            accept=_OK_OR_SERVER_ERROR,
        )  # fmt: skip
        return self._locked(reply, session)

    async def release(self, key: str, session: str) -> bool:
        reply = await self._send(
            "kv_release", key, _kv_path(key), params={"release": session},
            accept=_OK_OR_SERVER_ERROR,
        )  # fmt: skip
        return self._locked(reply, session)

    @staticmethod
    def _locked(reply: Reply, session: str) -> bool:
        if reply.status == 500:
            text = _text(reply)
            if "invalid session" in text:
                raise SessionGone(f"the Consul session {session} no longer exists")
            raise ConsulUnavailable(f"Consul failed a lock request: {text}", http_status=500)
        return decode_json(reply) is True

    async def put(self, key: str, value: bytes) -> None:
        reply = await self._send("kv_put", key, _kv_path(key), body=value)
        if decode_json(reply) is not True:
            raise ConsulUnavailable(f"Consul did not store {key}")

    async def delete(self, key: str, *, cas: int | None = None) -> bool:
        params = {"cas": str(cas)} if cas is not None else {}
        reply = await self._send("kv_delete", key, _kv_path(key), method="DELETE", params=params)
        return decode_json(reply) is True

    async def read(
        self, key: str, *, index: int | None = None, wait: float | None = None
    ) -> tuple[int, KvRecord | None]:
        reply = await self._send(
            "kv_get", key, _kv_path(key), method="GET", accept=_OK_OR_MISSING, index=index,
            wait=wait,
        )  # fmt: skip
        if reply.status == 404:
            return reply.index, None
        items = decode_list(reply, "KV read")
        return reply.index, (_record(items[0]) if items else None)

    async def read_tree(
        self, prefix: str, *, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[KvRecord]]:
        reply = await self._send(
            "kv_list", prefix, _kv_path(prefix), method="GET", params={"recurse": ""},
            accept=_OK_OR_MISSING, index=index, wait=wait,
        )  # fmt: skip
        if reply.status == 404:
            return reply.index, []
        return reply.index, sorted(
            (_record(item) for item in decode_list(reply, "KV list")), key=lambda r: r.key
        )
