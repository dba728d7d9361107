"""Transport-level conformance: envelopes, content type, status codes, error bodies."""

from __future__ import annotations

import hvac
import pytest

from tests.devvault.conftest import Raw, unique

ENVELOPE_KEYS = [
    "request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings",
    "auth",
]  # fmt: skip


def test_health_get_and_head(raw: Raw, root: hvac.Client) -> None:
    r = raw("GET", "sys/health", token=None)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["initialized"] is True
    assert body["sealed"] is False
    assert body["standby"] is False
    head = root.sys.read_health_status()
    assert head.status_code == 200
    assert head.text == ""
    assert root.sys.read_health_status(method="GET", standby_ok=True)["sealed"] is False
    assert raw("POST", "sys/health", token=None).status_code == 405
    assert raw("GET", "sys/health?activecode=299", token=None).status_code == 299
    assert raw("GET", "sys/health?sealedcode=abc", token=None).status_code == 400


def test_seal_status_and_init(root: hvac.Client) -> None:
    assert root.sys.is_initialized() is True
    assert root.sys.is_sealed() is False
    status = root.sys.read_seal_status()
    assert status["type"] == "shamir"
    assert status["t"] == 1


def test_envelope_shape_and_content_type(raw: Raw) -> None:
    r = raw("GET", "auth/token/lookup-self")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert [k for k in body if k in ENVELOPE_KEYS] == ENVELOPE_KEYS
    assert body["data"]["id"] == raw.token
    assert body["warnings"] is None
    assert body["auth"] is None


def test_write_without_data_is_204_with_empty_body(raw: Raw) -> None:
    r = raw(
        "POST",
        f"sys/policies/acl/{unique('p')}",
        body={"policy": 'path "x" {capabilities=["read"]}'},
    )
    assert r.status_code == 204
    assert r.text == ""


def test_unknown_route_is_404_no_handler(raw: Raw) -> None:
    r = raw("GET", "no-such-mount/thing")
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {
        "errors": ['no handler for route "no-such-mount/thing". route entry not found.']
    }


def test_unsupported_path_and_operation(raw: Raw) -> None:
    r = raw("GET", "sys/definitely-not-a-path")
    assert r.status_code == 404
    assert r.json() == {"errors": ["1 error occurred:\n\t* unsupported path\n\n"]}
    r = raw("DELETE", "auth/token/lookup-self")
    assert r.status_code == 405
    assert r.json() == {"errors": ["1 error occurred:\n\t* unsupported operation\n\n"]}


def test_unknown_method_is_405(raw: Raw) -> None:
    r = raw("OPTIONS", "secret/data/x")
    assert r.status_code == 405
    assert r.json() == {"errors": []}


def test_malformed_json_is_400(raw: Raw) -> None:
    r = raw("POST", "secret/data/x", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["errors"]


def test_missing_and_invalid_tokens_are_403(raw: Raw) -> None:
    r = raw("GET", "secret/data/x", token=None)
    assert r.status_code == 403
    assert r.json() == {"errors": ["permission denied"]}
    r = raw("GET", "secret/data/x", token="hvs.not-a-real-token")
    assert r.status_code == 403
    assert any("permission denied" in e for e in r.json()["errors"])
    r = raw(
        "GET",
        "auth/token/lookup-self",
        token=None,
        headers={"Authorization": f"Bearer {raw.token}"},
    )
    assert r.status_code == 200


def test_list_query_parsing(raw: Raw, root: hvac.Client) -> None:
    assert raw("GET", "sys/policies/acl?list=True").status_code == 200
    assert raw("GET", "sys/policies/acl?list=1").json()["data"]["keys"]
    assert raw("LIST", "sys/policies/acl").status_code == 200
    r = raw("GET", "sys/policies/acl?list=maybe")
    assert r.status_code == 400
    assert r.json() == {"errors": []}
    assert "default" in root.list("sys/policies/acl")["data"]["keys"]


def test_read_of_nothing_is_404_empty_errors(raw: Raw, root: hvac.Client) -> None:
    r = raw("GET", f"sys/policies/acl/{unique('missing')}")
    assert r.status_code == 404
    assert r.json() == {"errors": []}
    assert root.read(f"sys/policies/acl/{unique('missing')}") is None


def test_kv_v2_invalid_path_warning_envelope(raw: Raw) -> None:
    r = raw("GET", "secret/not-data-path")
    assert r.status_code == 404
    body = r.json()
    assert body["data"] is None
    assert "vault kv get" in body["warnings"][0]


def test_null_fields_mean_not_supplied(raw: Raw) -> None:
    path = unique("nulls")
    r = raw(
        "POST",
        f"sys/mounts/{path}",
        body={"type": "kv", "options": {"version": "2"}, "config": None, "description": None},
    )
    assert r.status_code == 204
    r = raw(
        "POST", "auth/token/create", body={"ttl": None, "policies": ["default"], "num_uses": None}
    )
    assert r.status_code == 200
    assert r.json()["auth"]["lease_duration"] > 0
    raw("DELETE", f"sys/mounts/{path}")


def test_lenient_coercion(raw: Raw) -> None:
    for ttl, expected in ((90, 90), ("90", 90), ("90s", 90), ("1h30m", 5400)):
        r = raw(
            "POST", "auth/token/create", body={"ttl": ttl, "num_uses": "0", "renewable": "true"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["auth"]["lease_duration"] == expected
    r = raw("POST", "auth/token/create", body={"ttl": "-5s"})
    assert r.status_code == 400


@pytest.mark.parametrize("path", ["sys/mounts", "sys/auth", "sys/policy"])
def test_legacy_sys_routes_inject_data_at_top_level(raw: Raw, path: str) -> None:
    body = raw("GET", path).json()
    assert body["data"]
    for key, value in body["data"].items():
        assert body[key] == value
