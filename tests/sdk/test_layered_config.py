"""Typed, layered config: `config.bind(Model, base, override)` against the real Consul, and the
CLI's `config get-merged` (a subprocess, as a user runs it)."""

from __future__ import annotations

import json

import yaml
from pydantic import BaseModel

import latchkey
from tests.cli.helpers import clean_env, run_cli
from tests.fixtures.gateway import GatewayHandle
from tests.gateway.helpers import eventually
from tests.sdk.conftest import Upstreams


class Database(BaseModel):
    host: str
    pool_size: int = 5


class Logging(BaseModel):
    level: str = "INFO"


class Settings(BaseModel):
    database: Database
    logging: Logging = Logging()


class Flat(BaseModel):
    database__host: str


def seed(upstreams: Upstreams, base: str, prod: str) -> None:
    upstreams.put(base + "database/host", "db.dev.internal")
    upstreams.put(base + "database/pool_size", "5")
    upstreams.put(base + "logging/level", "DEBUG")
    upstreams.put(prod + "database/host", "db.prod.internal")
    upstreams.put(prod + "database/pool_size", "50")


async def test_nested_layers_follow_both_and_keep_last_good(
    client: latchkey.AsyncClient, upstreams: Upstreams, unique: str
) -> None:
    base = f"layered/{unique}/"
    prod = f"layered/{unique}/env/production/"
    seed(upstreams, base, prod)
    errors: list[Exception] = []
    settings = await client.config.bind(Settings, base, prod, on_error=errors.append)
    assert settings.database.host == "db.prod.internal"  # the later layer wins key by key
    assert settings.database.pool_size == 50  # parsed by the field type
    assert settings.logging.level == "DEBUG"  # only in the base layer
    database = settings.database  # a reference an app may hold to a nested part

    upstreams.put(base + "logging/level", "WARNING")  # a change to the base layer
    await eventually(lambda: settings.logging.level == "WARNING", what="the base layer change")
    upstreams.put(prod + "database/pool_size", "80")  # a change to the override layer
    await eventually(lambda: settings.database.pool_size == 80, what="the override change")
    assert database.pool_size == 80
    upstreams.consul.kv.delete(prod + "database/host")  # the base value shows through
    await eventually(lambda: settings.database.host == "db.dev.internal", what="the fallback")

    upstreams.put(prod + "database/pool_size", "lots")
    await eventually(lambda: len(errors) == 1, what="the invalid update to reach on_error")
    assert "pool_size" in str(errors[0])
    assert settings.database.pool_size == 80  # the last good object is kept
    upstreams.put(prod + "database/pool_size", "12")
    await eventually(lambda: settings.database.pool_size == 12, what="recovery")


async def test_flat_field_names_still_bind(
    client: latchkey.AsyncClient, upstreams: Upstreams, unique: str
) -> None:
    prefix = f"flat/{unique}/"
    upstreams.put(prefix + "database/host", "db.one")
    flat = await client.config.bind(prefix, Flat)  # the older spelling, one layer
    assert flat.database__host == "db.one"
    layered = await client.config.bind(Flat, prefix)
    upstreams.put(prefix + "database/host", "db.two")
    await eventually(lambda: flat.database__host == layered.database__host == "db.two")


async def test_cli_get_merged(gateway: GatewayHandle, upstreams: Upstreams, unique: str) -> None:
    base = f"merged/{unique}/"
    prod = f"merged/{unique}/env/production/"
    seed(upstreams, base, prod)
    env = clean_env(LATCHKEY_ADDR=gateway.addr, LATCHKEY_TOKEN=gateway.tokens["app"])
    expected = {
        "database": {"host": "db.prod.internal", "pool_size": 50},
        "logging": {"level": "DEBUG"},
    }  # env/production/... belongs to the later layer only
    run = await run_cli("config", "get-merged", base, prod, "--format", "json", env=env)
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout) == expected
    run = await run_cli("config", "get-merged", base, prod, "--format", "yaml", env=env)
    assert run.code == 0, run.stderr
    assert yaml.safe_load(run.stdout) == expected
    assert "pool_size: 50" in run.stdout
