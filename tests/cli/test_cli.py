"""The `latchkey` CLI in-process (click's CliRunner) against the real gateway."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from click.testing import CliRunner, Result

from latchkey.cli._app import cli
from tests.fixtures.gateway import GatewayHandle
from tests.sdk.conftest import Upstreams


async def invoke(gateway: GatewayHandle, *args: str, identity: str = "app", **kw: Any) -> Result:
    base = ["--addr", gateway.addr, "--token", gateway.tokens[identity]]
    return await asyncio.to_thread(CliRunner().invoke, cli, [*base, *args], **kw)


async def test_secrets_get_hides_values_unless_asked(gateway: GatewayHandle) -> None:
    shown = await invoke(gateway, "secrets", "get", "demo/app")
    assert shown.exit_code == 0, shown.output
    assert "greeting" in shown.output
    assert "hello from Vault" not in shown.output
    field = await invoke(gateway, "secrets", "get", "demo/app", "--field", "greeting")
    assert field.output == "hello from Vault\n"
    doc = json.loads(
        (await invoke(gateway, "secrets", "get", "demo/app", "--format", "json", "--reveal")).output
    )
    assert doc["data"]["greeting"] == "hello from Vault"
    missing = await invoke(gateway, "secrets", "get", "demo/none")
    assert missing.exit_code == 3
    assert missing.stderr.startswith("error: NotFound:")


async def test_db_creds_and_leases(gateway: GatewayHandle) -> None:
    creds = await invoke(gateway, "db", "creds", "demo-readonly", "--format", "json")
    doc = json.loads(creds.output)
    assert doc["password"] == "********"
    password = (
        await invoke(gateway, "db", "creds", "demo-readonly", "--field", "password")
    ).output.strip()
    assert gateway.postgres.can_login(doc["username"], password, "demo")
    listed = await invoke(gateway, "leases", "list", "--role", "demo-readonly", "--format", "json")
    assert doc["lease_id"] in {x["lease_id"] for x in json.loads(listed.output)}
    table = await invoke(gateway, "leases", "list")
    assert "LEASE_ID" in table.output
    assert password not in table.output
    renewed = await invoke(gateway, "leases", "renew", doc["lease_id"], "--field", "lease_id")
    assert renewed.output.strip() == doc["lease_id"]
    # Another identity's lease looks exactly like a lease that does not exist (NOT_FOUND).
    denied = await invoke(gateway, "leases", "renew", doc["lease_id"], identity="other")
    assert denied.exit_code == 3
    revoked = await invoke(gateway, "leases", "revoke", "--force", doc["lease_id"])
    assert revoked.exit_code == 0
    assert "revoked" in revoked.output


async def test_config_commands(gateway: GatewayHandle, upstreams: Upstreams, unique: str) -> None:
    prefix = f"cli/{unique}/"
    upstreams.put(prefix + "level", "debug")
    got = await invoke(gateway, "config", "get", prefix + "level", "--field", "value")
    assert got.output == "debug\n"
    listed = json.loads(
        (await invoke(gateway, "config", "list", prefix, "--format", "json")).output
    )
    assert [x["key"] for x in listed] == [prefix + "level"]
    watched = await invoke(gateway, "config", "watch", prefix, "--count", "1")
    line = json.loads(watched.output.splitlines()[0])
    assert line["event"] == "snapshot"
    assert line["values"] == {prefix + "level": "debug"}


async def test_services_and_status(
    gateway: GatewayHandle, upstreams: Upstreams, unique: str
) -> None:
    name = f"cli-{unique}"
    upstreams.register(name, 1, tags=("v1",))
    upstreams.register(name, 2, status="critical")
    listed = await invoke(gateway, "services", "list", name, "--format", "json")
    assert [x["id"] for x in json.loads(listed.output)] == [f"{name}-1"]
    assert (
        await invoke(gateway, "services", "list", name, "--tag", "v1", "--field", "port")
    ).output == "9001\n"
    watched = await invoke(gateway, "services", "watch", name, "--count", "1")
    assert json.loads(watched.output.splitlines()[0])["ids"] == [f"{name}-1"]
    status = await invoke(gateway, "status")
    assert "identity  app (via token)" in status.output
    assert (await invoke(gateway, "status", "--field", "identity")).output == "app\n"


async def test_env_configuration_and_exit_codes(gateway: GatewayHandle) -> None:
    env = {"LATCHKEY_ADDR": gateway.addr, "LATCHKEY_TOKEN": gateway.tokens["app"]}
    ok = await asyncio.to_thread(CliRunner().invoke, cli, ["status", "--format", "json"], env=env)
    assert json.loads(ok.output)["identity"] == "app"
    bad = await asyncio.to_thread(CliRunner().invoke, cli, ["status", "--format", "xml"], env=env)
    assert bad.exit_code == 2
    unauth = await asyncio.to_thread(
        CliRunner().invoke, cli, ["--token", "nope", "status"], env=env
    )
    assert unauth.exit_code == 6
    down = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["--addr", "127.0.0.1:1", "--retry-deadline", "0.3", "status"],
        env={**env, "LATCHKEY_ADDR": ""},
    )
    assert down.exit_code == 5


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    commands = [
        ["secrets", "get"], ["db", "creds"], ["leases", "list"], ["leases", "renew"],
        ["leases", "revoke"], ["config", "get"], ["config", "list"], ["config", "watch"],
        ["services", "list"], ["services", "watch"], ["status"], ["exec"],
    ]  # fmt: skip
    for command in commands:
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Example:" in result.output, command
