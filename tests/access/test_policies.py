"""Policy sets, bindings, the policy authorizer and reloading."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from latchkey_server.access.authz import Authorizer, ResourceKind
from latchkey_server.access.policies import (
    DEFAULT_POLICY_DIR,
    PolicyAuthorizer,
    PolicySet,
    PolicyStore,
)
from latchkey_server.errors import InvalidArgument, PermissionDenied
from latchkey_server.models import Identity

K = ResourceKind
SHIPPED = Path(__file__).resolve().parents[2] / "policies"


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


BASIC = {
    "app.hcl": 'service "payments" { capabilities = ["discover"] }\n',
    "ops.hcl": 'database "*" { capabilities = ["list_leases"] }\n',
    "bindings.hcl": (
        'binding "billing" { policies = ["app"] }\n'
        'binding "spiffe://example.org/ops/*" { policies = ["ops", "app"] }\n'
    ),
}


# ---------------------------------------------------------------- the shipped policies


def test_default_directory_is_the_repositorys() -> None:
    assert DEFAULT_POLICY_DIR == SHIPPED


@pytest.fixture(scope="module")
def shipped() -> PolicySet:
    return PolicySet.load(SHIPPED)


def test_shipped_policies_load(shipped: PolicySet) -> None:
    assert set(shipped.policies) == {"app", "operator", "auditor", "dev"}
    assert shipped.policies_for("dev") == ("dev",)
    assert shipped.policies_for("billing") == ("app",)
    assert shipped.policies_for("spiffe://example.org/billing") == ("app",)
    assert shipped.policies_for("operator") == ("operator",)
    assert shipped.policies_for("auditor") == ("auditor",)


@pytest.mark.parametrize(
    ("identity", "kind", "resource", "capability", "expected"),
    [
        ("billing", K.SECRET, "secret/data/billing/db", "read", True),
        ("billing", K.SECRET, "secret/data/billing/root", "read", False),
        ("billing", K.SECRET, "secret/data/orders/db", "read", False),
        ("billing", K.DATABASE, "billing-ro", "watch", True),
        ("billing", K.DATABASE, "billing-ro", "revoke", True),
        ("billing", K.DATABASE, "billing-ro", "revoke_any", False),
        ("billing", K.DATABASE, "*", "list_leases", False),
        ("billing", K.CONFIG, "billing/", "watch", True),
        ("billing", K.CONFIG, "billing/feature-x", "read", True),
        ("billing", K.CONFIG, "billingx", "read", False),
        ("billing", K.SERVICE, "payments", "discover", True),
        ("billing", K.SERVICE, "orders", "discover", False),
        ("billing", K.GATEWAY, "status", "status", True),
        ("spiffe://example.org/billing", K.DATABASE, "billing-rw", "read", True),
        ("spiffe://example.org/billingx", K.DATABASE, "billing-rw", "read", False),
        ("operator", K.DATABASE, "*", "list_leases", True),
        ("operator", K.DATABASE, "billing-ro", "revoke_any", True),
        ("operator", K.SECRET, "secret/data/billing/db", "read", False),
        ("operator", K.DATABASE, "billing-ro", "read", False),
        ("auditor", K.DATABASE, "*", "list_leases", True),
        ("auditor", K.GATEWAY, "status", "status", True),
        ("auditor", K.SECRET, "secret/data/billing/db", "read", False),
        ("auditor", K.DATABASE, "billing-ro", "read", False),
        ("auditor", K.CONFIG, "billing/", "read", False),
        ("dev", K.SECRET, "secret/data/anything", "read", True),
        ("dev", K.DATABASE, "*", "list_leases", True),
        ("dev", K.DATABASE, "any-role", "revoke_any", True),
        ("dev", K.CONFIG, "any/", "watch", True),
        ("dev", K.SERVICE, "any", "discover", True),
        ("dev", K.GATEWAY, "status", "status", True),
        ("Dev", K.SERVICE, "any", "discover", False),
        ("nobody", K.SERVICE, "payments", "discover", False),
        ("", K.SERVICE, "payments", "discover", False),
    ],
)
def test_shipped_policy_decisions(
    shipped: PolicySet,
    identity: str,
    kind: ResourceKind,
    resource: str,
    capability: str,
    expected: bool,
) -> None:
    assert shipped.allows(identity, kind, resource, capability) is expected


def test_dev_allows_every_capability_of_every_kind(shipped: PolicySet) -> None:
    from latchkey_server.access.policy import CAPABILITIES, DENY

    for kind, capabilities in CAPABILITIES.items():
        for capability in capabilities - {DENY}:
            assert shipped.allows("dev", kind, "x", capability), (kind, capability)


# ---------------------------------------------------------------- bindings


def test_identity_globs_and_unbound_identities(tmp_path: Path) -> None:
    policies = PolicySet.load(write(tmp_path, BASIC))
    assert policies.policies_for("spiffe://example.org/ops/alice") == ("ops", "app")
    assert policies.policies_for("spiffe://example.org/ops/") == ("ops", "app")
    assert policies.policies_for("spiffe://example.org/ops") == ()
    assert policies.policies_for("spiffe://example.org/opsx") == ()
    assert policies.policies_for("billing2") == ()
    assert policies.allows("spiffe://example.org/ops/bob", K.DATABASE, "*", "list_leases")
    assert not policies.allows("billing", K.DATABASE, "*", "list_leases")
    assert not policies.allows("unbound", K.SERVICE, "payments", "discover")


def test_missing_bindings_file_binds_nobody(tmp_path: Path) -> None:
    files = dict(BASIC)
    del files["bindings.hcl"]
    policies = PolicySet.load(write(tmp_path, files))
    assert policies.bindings == ()
    assert not policies.allows("billing", K.SERVICE, "payments", "discover")


def test_hidden_files_and_other_extensions_are_ignored(tmp_path: Path) -> None:
    files = {**BASIC, ".#app.hcl": "not hcl {", "notes.txt": "x", "app.hcl~": "x"}
    assert set(PolicySet.load(write(tmp_path, files)).policies) == {"app", "ops"}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"bindings.hcl": 'binding "x" { policies = ["nope"] }'}, "unknown policy 'nope'"),
        ({"bindings.hcl": 'bind "x" { policies = ["app"] }'}, "unknown block 'bind'"),
        ({"bindings.hcl": 'binding "x" { policy = ["app"] }'}, "expected exactly"),
        ({"bindings.hcl": 'binding "x" { policies = "app" }'}, "list of policy names"),
        ({"bindings.hcl": 'binding "a*b" { policies = ["app"] }'}, "only allowed as the last"),
        (
            {
                "bindings.hcl": 'binding "x" { policies = ["ops"] }\n'
                'binding "x" { policies = ["app"] }'
            },
            "repeated",
        ),
        ({"bindings.hcl": 'binding "x" {'}, "not valid HCL"),
        ({"broken.hcl": 'secret "a" { capabilities = ["write"] }'}, "unknown capability"),
        ({"broken.hcl": "secret {{"}, "not valid HCL"),
        ({"bad name.hcl": ""}, "the name 'bad name'"),
    ],
)
def test_invalid_files_fail_the_whole_load(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    write(tmp_path, {**BASIC, **files})
    with pytest.raises(InvalidArgument) as caught:
        PolicySet.load(tmp_path)
    assert expected in caught.value.message
    name = next(iter(files))
    assert name in caught.value.message or "bindings" in caught.value.message


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        PolicySet.load(tmp_path / "nope")


# ---------------------------------------------------------------- authorizer


def test_policy_authorizer_is_an_authorizer_with_safe_messages(tmp_path: Path) -> None:
    authorizer: Authorizer = PolicyAuthorizer(PolicySet.load(write(tmp_path, BASIC)))
    billing = Identity(name="billing", method="token")
    authorizer.authorize(billing, K.SERVICE, "payments", "discover")
    with pytest.raises(PermissionDenied) as caught:
        authorizer.authorize(billing, K.DATABASE, "y", "read")
    assert caught.value.message == "identity 'billing' may not read database 'y'"
    with pytest.raises(PermissionDenied) as caught:
        authorizer.authorize(billing, K.DATABASE, "x" * 5000 + "\n", "read")
    assert len(caught.value.message) < 300
    assert "\n" not in caught.value.message


# ---------------------------------------------------------------- the store


@pytest.fixture
def store(tmp_path: Path) -> PolicyStore:
    return PolicyStore(write(tmp_path / "policies", BASIC))


def bump(path: Path, text: str) -> None:
    """Rewrite `path` and move its mtime forward, so a same-size rewrite is still seen."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_store_reload_swaps_in_a_valid_set(store: PolicyStore) -> None:
    assert store.generation == 1
    assert not store.changed()
    assert not store.allows("billing", K.SERVICE, "orders", "discover")
    bump(store.directory / "app.hcl", 'service "orders" { capabilities = ["discover"] }\n')
    assert store.changed()
    assert store.reload() is True
    assert store.generation == 2
    assert not store.changed()
    assert store.allows("billing", K.SERVICE, "orders", "discover")
    assert not store.allows("billing", K.SERVICE, "payments", "discover")


def test_store_keeps_the_old_set_when_the_new_one_is_invalid(
    store: PolicyStore, caplog: pytest.LogCaptureFixture
) -> None:
    old = store.current
    bump(store.directory / "app.hcl", 'service "orders" { capabilities = ["read"] }\n')
    with caplog.at_level(logging.ERROR, logger="latchkey.access.policies"):
        assert store.reload() is False
    assert store.current is old
    assert store.generation == 1
    assert store.allows("billing", K.SERVICE, "payments", "discover")
    assert "app.hcl" in caplog.text
    assert "unknown capability 'read'" in caplog.text
    assert not store.changed()  # the failed attempt is remembered; no retry loop until edited


def test_authorizer_over_a_store_follows_reloads(store: PolicyStore) -> None:
    authorizer = PolicyAuthorizer(store)
    billing = Identity(name="billing", method="token")
    authorizer.authorize(billing, K.SERVICE, "payments", "discover")
    bump(store.directory / "bindings.hcl", "")
    assert store.reload()
    with pytest.raises(PermissionDenied):
        authorizer.authorize(billing, K.SERVICE, "payments", "discover")


def test_changed_sees_added_and_removed_files(store: PolicyStore) -> None:
    (store.directory / "new.hcl").write_text("")
    assert store.changed()
    assert store.reload()
    (store.directory / "new.hcl").unlink()
    assert store.changed()
    (store.directory / "notes.txt").write_text("ignored")
    assert store.reload()
    (store.directory / "other.txt").write_text("ignored")
    assert not store.changed()


def test_store_refuses_an_invalid_initial_set(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path / "p")
    (tmp_path / "p" / "dev.hcl").write_text("gateway {")
    with pytest.raises(InvalidArgument, match=r"dev\.hcl"):
        PolicyStore(tmp_path / "p")
