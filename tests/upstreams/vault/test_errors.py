"""Every error the adapter maps, provoked on a real server: 403, 404, 400 on a bad role, a lease
that is gone, a refused login, rate limiting, sealed, uninitialised and unreachable Vault.

The mapping is one table in `upstreams/vault.py` (hvac's exception class, refined by Vault's
own `errors`), so these tests pin it to what the real server answers.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import requests

from latchkey_server.devstack.openbao import HOW_TO_GET, find_bao
from latchkey_server.devstack.ports import free_port_pair
from latchkey_server.devstack.process import ComponentError, ManagedProcess
from latchkey_server.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from latchkey_server.upstreams.vault import TokenAuth, VaultAdapter, translate_error
from tests.fixtures.vault import VaultDatabase, VaultServer
from tests.upstreams.vault.conftest import adapter_for, make_db_role, token_with_policy, unique
from tests.upstreams.vault.gateway_auth import METHODS, set_up_login


async def test_403_a_token_without_the_policy(vault_server: VaultServer, root: hvac.Client) -> None:
    token = token_with_policy(root, 'path "nothing/*" { capabilities = ["read"] }')
    adapter = adapter_for(vault_server, TokenAuth(token))
    try:
        with pytest.raises(PermissionDenied, match="the gateway's Vault policy") as info:
            await adapter.read_kv("secret", "anything")
        assert token not in info.value.message
        assert token not in str(info.value)
        with pytest.raises(PermissionDenied):
            await adapter.issue_credentials("database", "anything")
        assert adapter.reachable, "a refusal is an answer"
    finally:
        await adapter.close()


async def test_404_a_missing_secret_and_a_missing_mount(adapter: VaultAdapter) -> None:
    with pytest.raises(NotFound, match="secret secret/nothing/here not found"):
        await adapter.read_kv("secret", "nothing/here")
    mount = unique("nomount")
    with pytest.raises(NotFound, match=f"secret {mount}/x not found"):
        await adapter.read_kv(mount, "x")
    with pytest.raises(NotFound, match=f"database secrets engine mount '{mount}' not found"):
        await adapter.issue_credentials(mount, "role")


async def test_400_unknown_role_is_not_found(
    vault_database: VaultDatabase, adapter: VaultAdapter
) -> None:
    mount = vault_database.mount_point
    with pytest.raises(NotFound, match=f"database role 'ghost' not found on mount '{mount}'"):
        await adapter.issue_credentials(mount, "ghost")


async def test_a_lease_that_is_gone(vault_database: VaultDatabase, adapter: VaultAdapter) -> None:
    db = vault_database
    with pytest.raises(NotFound, match="no longer exists"):
        await adapter.renew_lease(f"{db.mount_point}/creds/ghost/{secrets.token_hex(8)}")
    issued = await adapter.issue_credentials(db.mount_point, make_db_role(db, db.vault.client()))
    db.vault.client().sys.revoke_lease(issued.lease_id)
    with pytest.raises(NotFound, match=f"lease {issued.lease_id} no longer exists"):
        await adapter.renew_lease(issued.lease_id)
    await adapter.revoke_lease(issued.lease_id)  # already gone: revoking succeeds


def test_not_renewable_is_a_failed_precondition(root: hvac.Client) -> None:
    """Vault's answer to renewing what cannot be renewed (here the root token), mapped."""
    with pytest.raises(hvac.exceptions.InvalidRequest) as info:
        root.auth.token.renew_self()
    error = translate_error(info.value, "renew its token")
    assert isinstance(error, FailedPrecondition)
    assert "any further" in error.message


@pytest.mark.parametrize("method", METHODS)
async def test_a_refused_login_names_the_settings(
    vault_server: VaultServer, root: hvac.Client, method: str, tmp_path: Path
) -> None:
    login = set_up_login(root, method, policy="default", ttl="1h", max_ttl="2h", workdir=tmp_path)
    wrong = (
        "s.wrong" + secrets.token_hex(12) if method == "token" else login.credential[:-4] + "AAAA"
    )
    login.credential_file.write_text(wrong)
    adapter = adapter_for(vault_server, login.auth)
    try:
        with pytest.raises(PermissionDenied, match=r"log in with .*vault\.auth") as info:
            await adapter.start()
        for secret in (wrong, login.credential):
            assert secret not in info.value.message
        assert adapter.reachable
        login.credential_file.unlink()
        setting = {"token": "token_file", "approle": "secret_id_file",
                   "userpass": "password_file", "jwt": "jwt_file"}[method]  # fmt: skip
        with pytest.raises(FailedPrecondition, match=rf"vault\.auth\.{setting} .* cannot be read"):
            await adapter.start()
    finally:
        await adapter.close()


async def test_429_rate_limited(vault_server: VaultServer, root: hvac.Client) -> None:
    path, quota = unique("limited/app"), unique("latchkey-test")
    root.secrets.kv.v2.create_or_update_secret(path, {"k": "v"})
    root.write_data(
        f"sys/quotas/rate-limit/{quota}",
        data={"path": f"secret/data/{path}", "rate": 1, "interval": "1m"},
    )
    adapter = adapter_for(vault_server, retry_attempts=1)
    try:
        await adapter.read_kv("secret", path)
        with pytest.raises(ResourceExhausted, match="rate limiting") as info:
            await adapter.read_kv("secret", path)
        assert info.value.retry_after
    finally:
        await adapter.close()
        root.delete(f"sys/quotas/rate-limit/{quota}")


async def test_sealed_vault_is_unavailable_and_says_so(openbao_process: VaultServer) -> None:
    bao = openbao_process.process
    assert bao is not None
    openbao_process.client().secrets.kv.v2.create_or_update_secret("app", {"k": "v"})
    adapter = adapter_for(openbao_process, retry_attempts=1)
    try:
        await adapter.read_kv("secret", "app")
        await adapter.ping()
        bao.seal()
        with pytest.raises(Unavailable, match="sealed") as info:
            await adapter.read_kv("secret", "app")
        assert info.value.retry_after
        with pytest.raises(Unavailable, match="sealed"):
            await adapter.ping()
        assert not adapter.reachable
        bao.unseal()
        await adapter.ping()
        assert adapter.reachable
        assert (await adapter.read_kv("secret", "app")).data == {"k": "v"}
    finally:
        await adapter.close()


async def test_paused_or_stopped_vault_is_unavailable(openbao_process: VaultServer) -> None:
    bao = openbao_process.process
    assert bao is not None
    openbao_process.client().secrets.kv.v2.create_or_update_secret("app", {"k": "v"})
    adapter = adapter_for(openbao_process, retry_attempts=1, timeout=1.0)
    try:
        await adapter.read_kv("secret", "app")
        bao.pause()
        try:
            with pytest.raises(Unavailable, match="did not answer in time"):
                await adapter.read_kv("secret", "app")
            with pytest.raises(Unavailable):
                await adapter.ping()
            assert not adapter.reachable
        finally:
            bao.resume()
        await adapter.ping()
        assert adapter.reachable
        bao.stop()
        with pytest.raises(Unavailable, match="cannot be reached"):
            await adapter.read_kv("secret", "app")
        assert not adapter.reachable
    finally:
        await adapter.close()


@pytest.fixture
def uninitialised_openbao(tmp_path: Path) -> Iterator[str]:
    """A real OpenBao server (not dev mode) that nobody initialised; yields its address."""
    try:
        binary = find_bao()
    except ComponentError as exc:
        pytest.fail(f"OpenBao is required for this test: {exc}", pytrace=False)
    port = free_port_pair()
    config = tmp_path / "openbao.hcl"
    config.write_text(
        'storage "inmem" {}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
        f'  cluster_address = "127.0.0.1:{port + 1}"\n  tls_disable = true\n}}\n'
        f'disable_mlock = true\napi_addr = "http://127.0.0.1:{port}"\n'
    )
    addr = f"http://127.0.0.1:{port}"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    process = ManagedProcess(
        "openbao (uninitialised)", [binary, "server", f"-config={config}"],
        tmp_path / "openbao.log", env=env,
    )  # fmt: skip

    def answers() -> bool:
        try:
            requests.get(f"{addr}/v1/sys/health", timeout=1)
        except requests.RequestException:
            return False
        return True

    process.start()
    try:
        process.wait_ready(answers, 30)
    except ComponentError as exc:
        process.stop()
        pytest.fail(f"{exc}\n{HOW_TO_GET}", pytrace=False)
    yield addr
    process.stop()


async def test_uninitialised_vault_is_unavailable(uninitialised_openbao: str) -> None:
    adapter = adapter_for(VaultServer(addr=uninitialised_openbao, root_token="none"))
    try:
        with pytest.raises(Unavailable, match="not initialized"):
            await adapter.ping()
        assert not adapter.reachable
    finally:
        await adapter.close()
