"""KV version 2 conformance through hvac (and raw HTTP for the 404 bodies)."""

from __future__ import annotations

import hvac
import hvac.exceptions
import pytest

from tests.upstreams.vault.conftest import Raw, unique


def test_versions_and_read(root: hvac.Client) -> None:
    path = unique("app")
    kv = root.secrets.kv.v2
    first = kv.create_or_update_secret(path, {"user": "a"})
    assert first["data"]["version"] == 1
    assert first["data"]["deletion_time"] == ""
    assert first["data"]["destroyed"] is False
    kv.create_or_update_secret(path, {"user": "b"})
    latest = kv.read_secret_version(path, raise_on_deleted_version=True)["data"]
    assert latest["data"] == {"user": "b"}
    assert latest["metadata"]["version"] == 2
    old = kv.read_secret_version(path, version=1, raise_on_deleted_version=True)["data"]
    assert old["data"] == {"user": "a"}
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path, version=7, raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(unique("never"), raise_on_deleted_version=True)


def test_check_and_set(root: hvac.Client) -> None:
    path = unique("cas")
    kv = root.secrets.kv.v2
    kv.create_or_update_secret(path, {"a": 1}, cas=0)
    with pytest.raises(
        hvac.exceptions.InvalidRequest, match="check-and-set parameter did not match"
    ):
        kv.create_or_update_secret(path, {"a": 2}, cas=0)
    assert kv.create_or_update_secret(path, {"a": 2}, cas=1)["data"]["version"] == 2
    kv.update_metadata(path, cas_required=True)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set parameter required"):
        kv.create_or_update_secret(path, {"a": 3})


def test_delete_undelete_destroy(root: hvac.Client, raw: Raw) -> None:
    path = unique("del")
    kv = root.secrets.kv.v2
    kv.create_or_update_secret(path, {"a": 1})
    kv.create_or_update_secret(path, {"a": 2})
    assert kv.delete_latest_version_of_secret(path).status_code == 204
    r = raw("GET", f"secret/data/{path}")
    assert r.status_code == 404
    body = r.json()
    assert "errors" not in body
    assert body["data"]["data"] is None
    assert body["data"]["metadata"]["deletion_time"] != ""
    deleted = kv.read_secret_version(path, raise_on_deleted_version=False)
    assert deleted["data"]["metadata"]["version"] == 2
    kv.undelete_secret_versions(path, versions=[2])
    assert kv.read_secret_version(path, raise_on_deleted_version=True)["data"]["data"] == {"a": 2}
    kv.delete_secret_versions(path, versions=[1])
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path, version=1, raise_on_deleted_version=True)
    kv.destroy_secret_versions(path, versions=[2])
    meta = kv.read_secret_metadata(path)["data"]
    assert meta["versions"]["2"]["destroyed"] is True
    assert meta["versions"]["1"]["deletion_time"] != ""
    kv.undelete_secret_versions(path, versions=[2])
    assert raw("GET", f"secret/data/{path}").status_code == 404


def test_metadata_and_list(root: hvac.Client, raw: Raw) -> None:
    base = unique("tree")
    kv = root.secrets.kv.v2
    kv.create_or_update_secret(f"{base}/a", {"x": 1})
    kv.create_or_update_secret(f"{base}/a/b", {"x": 1})
    kv.create_or_update_secret(f"{base}/c", {"x": 1})
    assert kv.list_secrets(base)["data"]["keys"] == ["a", "a/", "c"]
    assert raw("GET", f"secret/metadata/{base}?list=true").json()["data"]["keys"] == [
        "a",
        "a/",
        "c",
    ]
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.list_secrets(unique("empty"))
    kv.update_metadata(f"{base}/c", max_versions=2, custom_metadata={"owner": "me"})
    for i in range(3):
        kv.create_or_update_secret(f"{base}/c", {"x": i})
    meta = kv.read_secret_metadata(f"{base}/c")["data"]
    assert meta["current_version"] == 4
    assert meta["max_versions"] == 2
    assert sorted(meta["versions"]) == ["3", "4"]
    assert meta["oldest_version"] == 3
    assert meta["custom_metadata"] == {"owner": "me"}
    assert meta["delete_version_after"] == "0s"
    assert kv.delete_metadata_and_all_versions(f"{base}/c").status_code == 204
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(f"{base}/c")
    r = raw("GET", f"secret/metadata/{unique('nope')}")
    assert r.status_code == 404
    assert r.json() == {"errors": []}


def test_missing_data_is_400(raw: Raw) -> None:
    r = raw("POST", f"secret/data/{unique('x')}", body={"options": {}})
    assert r.status_code == 400
    assert r.json() == {"errors": ["no data provided"]}


def test_engine_config_and_mounts(root: hvac.Client) -> None:
    mount = unique("kv")
    root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    try:
        assert root.sys.list_mounted_secrets_engines()["data"][f"{mount}/"]["options"] == {
            "version": "2"
        }
        root.secrets.kv.v2.configure(max_versions=5, mount_point=mount)
        assert root.secrets.kv.v2.read_configuration(mount_point=mount)["data"]["max_versions"] == 5
        with pytest.raises(hvac.exceptions.InvalidRequest, match="path is already in use"):
            root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    finally:
        root.sys.disable_secrets_engine(mount)
    assert f"{mount}/" not in root.sys.list_mounted_secrets_engines()["data"]
