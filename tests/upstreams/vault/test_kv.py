"""KV v2 reads as the gateway makes them (`read_kv`): versions, deleted and destroyed versions."""

from __future__ import annotations

import hvac
import pytest

from latchkey_server.errors import NotFound
from latchkey_server.upstreams.vault import VaultAdapter
from tests.upstreams.vault.conftest import unique


async def test_latest_and_older_versions(root: hvac.Client, adapter: VaultAdapter) -> None:
    path = unique("kv/app")
    kv = root.secrets.kv.v2
    kv.create_or_update_secret(path, {"user": "a"})
    kv.update_metadata(path, custom_metadata={"owner": "billing"})
    kv.create_or_update_secret(path, {"user": "b", "n": 2})
    latest = await adapter.read_kv("secret", path)
    assert latest.data == {"user": "b", "n": 2}, "values keep their JSON types"
    assert latest.version == 2
    assert latest.created_time is not None
    assert latest.custom_metadata == {"owner": "billing"}
    old = await adapter.read_kv("secret", path, 1)
    assert (old.data, old.version) == ({"user": "a"}, 1)
    assert old.created_time is not None
    assert old.created_time <= latest.created_time
    with pytest.raises(NotFound, match=rf"secret/{path} version 7 not found"):
        await adapter.read_kv("secret", path, 7)
    with pytest.raises(NotFound, match="not found"):
        await adapter.read_kv("secret", unique("kv/never"))
    assert adapter.reachable
    assert adapter.last_contact is not None


async def test_deleted_and_destroyed_versions(root: hvac.Client, adapter: VaultAdapter) -> None:
    """Vault answers a deleted version with 404 *and* its metadata (no `data`); the gateway
    treats both a deleted and a destroyed version as not found, and an undeleted one as back."""
    path = unique("kv/del")
    kv = root.secrets.kv.v2
    kv.create_or_update_secret(path, {"a": 1})
    kv.create_or_update_secret(path, {"a": 2})
    kv.delete_latest_version_of_secret(path)
    with pytest.raises(NotFound):
        await adapter.read_kv("secret", path)
    assert (await adapter.read_kv("secret", path, 1)).data == {"a": 1}
    kv.undelete_secret_versions(path, versions=[2])
    assert (await adapter.read_kv("secret", path)).data == {"a": 2}
    kv.destroy_secret_versions(path, versions=[1])
    with pytest.raises(NotFound):
        await adapter.read_kv("secret", path, 1)
    kv.delete_metadata_and_all_versions(path)
    with pytest.raises(NotFound):
        await adapter.read_kv("secret", path)


async def test_another_kv_v2_mount(root: hvac.Client, adapter: VaultAdapter) -> None:
    mount = unique("kv")
    root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    try:
        root.secrets.kv.v2.create_or_update_secret("app", {"k": "v"}, mount_point=mount)
        assert (await adapter.read_kv(mount, "app")).data == {"k": "v"}
    finally:
        root.sys.disable_secrets_engine(mount)
    with pytest.raises(NotFound, match=f"secret {mount}/app not found"):
        await adapter.read_kv(mount, "app")
