"""Feature flags through OpenFeature: `LatchkeyProvider` over flagd flag sets in the real Consul.

The blocking client runs in a thread (the in-process gateway lives in the test's event loop).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import consul
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent

import latchkey
from latchkey.openfeature import LatchkeyProvider
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.seed import new_ui_flag_set
from tests.fixtures.gateway import GatewayHandle, start_gateway
from tests.sdk.conftest import Upstreams, sync_client

USERS = [f"user-{n}" for n in range(10_000)]


class Events:
    """Provider events as the OpenFeature API hands them to a client's handlers."""

    def __init__(self, client: Any) -> None:
        self.seen: list[tuple[ProviderEvent, EventDetails]] = []
        self._cond = threading.Condition()
        for kind in ProviderEvent:
            client.add_handler(kind, self._handler(kind))

    def _handler(self, kind: ProviderEvent) -> Callable[[EventDetails], None]:
        def handle(details: EventDetails) -> None:
            with self._cond:
                self.seen.append((kind, details))
                self._cond.notify_all()

        return handle

    def wait_for(self, kind: ProviderEvent, after: int = 0, within: float = 15.0) -> EventDetails:
        """The first `kind` event at position >= `after`, waiting up to `within` seconds."""
        deadline = time.monotonic() + within
        with self._cond:
            while True:
                for seen_kind, details in self.seen[after:]:
                    if seen_kind == kind:
                        return details
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind} within {within}s; saw {self.seen}")
                self._cond.wait(left)


@contextmanager
def flags_client(client: latchkey.Client, prefix: str) -> Iterator[tuple[Any, Events]]:
    domain = f"test-{uuid.uuid4().hex[:8]}"
    provider = LatchkeyProvider(client, prefix)
    of_client = api.get_client(domain)
    events = Events(of_client)
    api.set_provider_and_wait(provider, domain=domain)  # blocks until the flags are loaded
    try:
        yield of_client, events
    finally:
        provider.shutdown()


def evaluate_all(of_client: Any) -> list[bool]:
    return [
        of_client.get_boolean_value("new_ui", False, EvaluationContext(targeting_key=user))
        for user in USERS
    ]


SUBPROCESS = """
import json, sys
from openfeature.evaluation_context import EvaluationContext
import latchkey
from latchkey.openfeature import LatchkeyProvider

prefix = sys.argv[1]
with latchkey.Client() as client:
    provider = LatchkeyProvider(client, prefix)
    provider.initialize(EvaluationContext())
    out = [
        provider.resolve_boolean_details("new_ui", False, EvaluationContext(f"user-{n}")).value
        for n in range(10_000)
    ]
    provider.shutdown()
print(json.dumps(out))
"""


def in_subprocess(gateway: GatewayHandle, prefix: str, tmp: Path) -> list[bool]:
    import subprocess

    script = tmp / "evaluate.py"
    script.write_text(SUBPROCESS)
    env = {**os.environ, "LATCHKEY_ADDR": gateway.addr, "LATCHKEY_TOKEN": gateway.tokens["app"]}
    done = subprocess.run(
        [sys.executable, str(script), prefix], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: list[bool] = json.loads(done.stdout)
    return result


def rollout_scenario(
    gateway: GatewayHandle, upstreams: Upstreams, unique: str, tmp: Path
) -> dict[str, float]:
    prefix = f"flags/{unique}/production/"
    upstreams.put(prefix + "web", json.dumps(new_ui_flag_set(10)))
    with sync_client(gateway) as client, flags_client(client, prefix) as (flags, events):
        events.wait_for(ProviderEvent.PROVIDER_READY)
        first = evaluate_all(flags)
        share = sum(first) / len(first)
        assert 0.085 <= share <= 0.115, share  # 10 % ± 1.5 %
        assert evaluate_all(flags) == first  # stable on every evaluation
        assert in_subprocess(gateway, prefix, tmp) == first  # and across processes

        mark = len(events.seen)
        started = time.monotonic()
        upstreams.put(prefix + "web", json.dumps(new_ui_flag_set(50)))
        changed = events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, after=mark)
        latency = time.monotonic() - started
        assert changed.flags_changed == ["new_ui"]
        wider = evaluate_all(flags)
        assert 0.48 <= sum(wider) / len(wider) <= 0.52
        # fractional buckets are stable: everyone who had the new UI at 10 % keeps it at 50 %
        assert all(w for f, w in zip(first, wider, strict=True) if f)

        mark = len(events.seen)
        upstreams.put(prefix + "web", "{not json")  # a broken document: last good stays
        error = events.wait_for(ProviderEvent.PROVIDER_ERROR, after=mark)
        assert "not a valid flagd document" in (error.message or "")
        assert evaluate_all(flags) == wider
        detail = flags.get_boolean_details("nope", True, EvaluationContext(targeting_key="u"))
        assert detail.value is True
        assert detail.error_code is not None
        return {"share_at_10": share, "change_to_event_s": latency}


async def test_new_ui_rollout_is_ten_percent_stable_and_follows_consul(
    gateway: GatewayHandle, upstreams: Upstreams, unique: str, tmp_path: Path
) -> None:
    figures = await asyncio.to_thread(rollout_scenario, gateway, upstreams, unique, tmp_path)
    print(f"flags figures: {figures}")


def outage_scenario(handle: GatewayHandle, agent: ConsulAgent) -> None:
    prefix = "flags/production/"
    kv = consul.Consul(host="127.0.0.1", port=agent.http_port).kv
    kv.put(prefix + "web", json.dumps(new_ui_flag_set(10)))
    with sync_client(handle) as client, flags_client(client, prefix) as (flags, events):
        events.wait_for(ProviderEvent.PROVIDER_READY)
        before = evaluate_all(flags)
        mark = len(events.seen)
        agent.kill()  # the real Consul process, SIGKILLed
        stale = events.wait_for(ProviderEvent.PROVIDER_STALE, after=mark, within=30)
        assert "last known" in (stale.message or "")
        assert evaluate_all(flags) == before  # last known good while Consul is down
        mark = len(events.seen)
        agent.start()  # comes back empty (dev mode keeps KV in memory)
        kv = consul.Consul(host="127.0.0.1", port=agent.http_port).kv
        kv.put(prefix + "web", json.dumps(new_ui_flag_set(10)))
        events.wait_for(ProviderEvent.PROVIDER_READY, after=mark, within=60)


async def test_last_known_good_flags_while_consul_is_down(
    demo_env: dict[str, Any], vault_server: Any, postgres: PostgresCluster, tmp_path: Path
) -> None:
    agent = ConsulAgent(tmp_path / "consul")
    await asyncio.to_thread(agent.start)
    handle = None
    try:
        handle = await start_gateway(
            demo_env, agent, vault_server, postgres, consul={"addr": agent.http_addr, "wait": 5}
        )
        await asyncio.to_thread(outage_scenario, handle, agent)
    finally:
        if handle is not None:
            await handle.gateway.stop()
        await asyncio.to_thread(agent.stop)


async def test_cli_flags_eval_and_list(
    gateway: GatewayHandle, upstreams: Upstreams, unique: str
) -> None:
    from tests.cli.helpers import clean_env, run_cli

    prefix = f"flags/{unique}/production/"
    upstreams.put(prefix + "web", json.dumps(new_ui_flag_set(10)))
    beta = {
        "flags": {
            "theme": {
                "state": "ENABLED",
                "variants": {"dark": "dark", "light": "light"},
                "defaultVariant": "light",
                "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "dark", None]},
            }
        }
    }
    upstreams.put(prefix + "beta", json.dumps(beta))
    env = clean_env(LATCHKEY_ADDR=gateway.addr, LATCHKEY_TOKEN=gateway.tokens["app"])
    # the CLI's answer for a user is what the provider in this process says for that user
    client = sync_client(gateway)
    provider = LatchkeyProvider(client, prefix)
    await asyncio.to_thread(provider.initialize, EvaluationContext())
    for user in ("user-1", "user-2", "user-3", "user-7"):
        want = provider.resolve_boolean_details("new_ui", False, EvaluationContext(user)).value
        run = await run_cli(
            "flags", "eval", prefix, "new_ui", "--targeting-key", user, "--format", "json", env=env
        )
        assert run.code == 0, run.stderr
        doc = json.loads(run.stdout)
        assert doc["value"] is want
        assert doc["variant"] == ("on" if want else "off")
        assert doc["reason"] == "TARGETING_MATCH"
    await asyncio.to_thread(provider.shutdown)
    await asyncio.to_thread(client.close)

    run = await run_cli(
        "flags", "eval", prefix, "theme", "--targeting-key", "u", "--context", "plan=pro",
        "--format", "json", env=env,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["value"] == "dark"
    run = await run_cli("flags", "eval", prefix, "theme", "--format", "json", env=env)
    assert json.loads(run.stdout)["value"] == "light"

    run = await run_cli("flags", "list", prefix, "--format", "json", env=env)
    assert run.code == 0, run.stderr
    listed = {row["flag"]: row for row in json.loads(run.stdout)}
    assert listed["new_ui"]["flag_set"] == prefix + "web"
    assert listed["new_ui"]["targeting"] is True
    assert listed["theme"]["default_variant"] == "light"
    run = await run_cli("flags", "list", prefix, env=env)
    assert "new_ui" in run.stdout
    assert "FLAG_SET" in run.stdout

    upstreams.put(prefix + "broken", json.dumps({"flags": {"x": {"variants": {}}}}))
    run = await run_cli("flags", "list", prefix, env=env)
    assert run.code == 0, run.stderr  # a broken set is reported, the others still listed
    assert f"{prefix}broken is not a valid flagd flag set" in run.stderr
    assert "state" in run.stderr  # what is wrong with it
    run = await run_cli("flags", "eval", prefix, "nope", "--targeting-key", "u", env=env)
    assert run.code != 0
    assert "nope" in run.stderr
