"""The Consul fixture is a real agent: KV round trips and blocking queries behave like Consul."""

from __future__ import annotations

import threading
import uuid

import consul

from latchkey_server.devstack.consul import ConsulAgent


def _client(agent: ConsulAgent) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.http_port)


def test_kv_put_get_round_trip(consul_agent: ConsulAgent) -> None:
    c = _client(consul_agent)
    key = f"test/roundtrip/{uuid.uuid4().hex}"
    assert c.kv.put(key, "hello") is True
    index, entry = c.kv.get(key)
    assert entry is not None
    assert entry["Value"] == b"hello"
    assert int(index) == entry["ModifyIndex"] >= 1


def test_blocking_query_returns_when_key_changes(consul_agent: ConsulAgent) -> None:
    c = _client(consul_agent)
    key = f"test/blocking/{uuid.uuid4().hex}"
    c.kv.put(key, "v1")
    index, _ = c.kv.get(key)
    result: dict[str, object] = {}
    returned = threading.Event()

    def block() -> None:
        # A long wait: returning at all (before the wait expires) means the change woke it.
        new_index, entry = _client(consul_agent).kv.get(key, index=index, wait="120s")
        result["index"], result["entry"] = new_index, entry
        returned.set()

    waiter = threading.Thread(target=block, daemon=True)
    waiter.start()
    assert not returned.is_set()
    c.kv.put(key, "v2")
    assert returned.wait(timeout=30), "blocking query did not return after the key changed"
    entry = result["entry"]
    assert isinstance(entry, dict)
    assert entry["Value"] == b"v2"
    assert int(str(result["index"])) > int(index)
