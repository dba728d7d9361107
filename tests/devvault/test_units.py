"""Unit tests of vault-dev's pure parts: durations, CalculateTTL, the ACL matcher."""

from __future__ import annotations

import pytest

from latchkey_server.devvault.errors import BadRequest
from latchkey_server.devvault.policy import ACL, parse_policy
from latchkey_server.devvault.postgres_plugin import generate_password, split_statements
from latchkey_server.devvault.ttl import (
    DurationError,
    MountTTLs,
    calculate_ttl,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90),
        ("90", 90),
        ("90s", 90),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("", 0),
        ("2d", 172800),
        ("500ms", 0),
    ],
)
def test_parse_duration(value: object, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["-1", -5, "abc", "1x", [1], True])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (3600, "1h"), (3598, "59m58s"), (300, "5m"), (3661, "1h1m1s")]
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


def ttl(**kw: int) -> tuple[int, list[str]]:
    args = {
        "now": 1000,
        "increment": 0,
        "backend_ttl": 0,
        "period": 0,
        "backend_max_ttl": 0,
        "explicit_max_ttl": 0,
        "start": 1000,
    }
    args.update(kw)
    result = calculate_ttl(mount=MountTTLs(default_ttl=3600, max_ttl=7200), **args)
    return result.ttl, result.warnings


def test_calculate_ttl_defaults_and_backend_ttl() -> None:
    assert ttl() == (3600, [])
    assert ttl(backend_ttl=60) == (60, [])
    assert ttl(increment=30, backend_ttl=60) == (30, [])


def test_calculate_ttl_caps_with_warning() -> None:
    value, warnings = ttl(increment=3600, backend_max_ttl=600, now=1002)
    assert value == 598
    assert warnings == [
        'TTL of "1h" exceeded the effective max_ttl of "9m58s"; TTL value is capped accordingly'
    ]
    value, _ = ttl(increment=10000)
    assert value == 7200


def test_calculate_ttl_past_max() -> None:
    with pytest.raises(BadRequest, match="past the max TTL, cannot renew"):
        ttl(backend_max_ttl=10, now=1011)


def test_calculate_ttl_period() -> None:
    assert ttl(period=120, increment=5) == (120, [])
    value, warnings = ttl(period=120, explicit_max_ttl=100, now=1050)
    assert value == 50
    assert warnings


def acl(text: str) -> ACL:
    return ACL.build([parse_policy("t", text)])


def test_acl_exact_prefix_and_deny_by_default() -> None:
    a = acl(
        'path "secret/data/app" { capabilities = ["read"] }\n'
        'path "secret/*" { capabilities = ["list"] }'
    )
    assert a.allows("secret/data/app", "read")
    assert not a.allows("secret/data/app", "update")
    assert a.allows("secret/metadata/", "list", is_list=True)
    assert not a.allows("other/x", "read")


def test_acl_longest_prefix_and_deny() -> None:
    a = acl(
        'path "secret/*" { capabilities = ["deny"] }\n'
        'path "secret/data/*" { capabilities = ["read"] }'
    )
    assert a.allows("secret/data/x", "read")
    assert not a.allows("secret/metadata/x", "read")


def test_acl_plus_priority() -> None:
    a = acl(
        'path "secret/+/app" { capabilities = ["read"] }\n'
        'path "secret/data/*" { capabilities = ["update"] }\n'
        'path "secret/data/+" { capabilities = ["list"] }\n'
    )
    # later first wildcard wins: secret/data/+ (pos 12) over secret/+/app (pos 7)
    assert a.capabilities("secret/data/app") == {"list"}
    assert a.capabilities("secret/kv/app") == {"read"}
    assert a.capabilities("secret/data/x/y") == {"update"}


def test_acl_same_pattern_merges_and_deny_wins() -> None:
    a = ACL.build([
        parse_policy("a", 'path "p/*" { capabilities = ["read"] }'),
        parse_policy("b", 'path "p/*" { capabilities = ["list"] }'),
        parse_policy("c", 'path "q" { capabilities = ["read"] }'),
        parse_policy("d", 'path "q" { capabilities = ["deny"] }'),
    ])  # fmt: skip
    assert a.capabilities("p/x") == {"read", "list"}
    assert not a.allows("q", "read")


def test_sudo_paths_need_sudo() -> None:
    a = acl('path "sys/leases/revoke-prefix/*" { capabilities = ["update"] }')
    assert not a.allows("sys/leases/revoke-prefix/x", "update")
    b = acl('path "sys/leases/revoke-prefix/*" { capabilities = ["update", "sudo"] }')
    assert b.allows("sys/leases/revoke-prefix/x", "update")


def test_legacy_policy_and_parse_errors() -> None:
    assert acl('path "a" { policy = "write" }').allows("a", "create")
    with pytest.raises(BadRequest):
        parse_policy("x", 'path "a" { capabilities = ["fly"] }')
    with pytest.raises(BadRequest):
        parse_policy("x", 'path "a*b" { capabilities = ["read"] }')
    with pytest.raises(BadRequest):
        parse_policy("x", "path {")


def test_statement_splitting_and_password() -> None:
    assert split_statements("CREATE ROLE a; GRANT x TO a;") == ["CREATE ROLE a", "GRANT x TO a"]
    block = "DO $$ BEGIN CREATE ROLE a; END $$;"
    assert split_statements(block) == [block]
    pw = generate_password()
    assert len(pw) == 20
    assert any(c.islower() for c in pw)
    assert any(c.isupper() for c in pw)
    assert any(c.isdigit() for c in pw)
    assert "-" in pw
