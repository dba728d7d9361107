"""Input validation: what callers may send, and the message that tells them what to fix."""

from __future__ import annotations

import pytest

from latchkey_server.errors import InvalidArgument
from latchkey_server.transport import validate

GOOD_PATHS = ["demo/app", "a", "team-1/service_x/v1.2", "x" * 512]
BAD_PATHS = [
    "", "/demo", "demo/", "demo//app", "demo/../etc", "..", "./a", "a/./b", "demo/%2e%2e",
    "demo/app*", "demo/+", "dé/mo", "demo\x00", "demo app", "demo\\app", "x" * 513,
    "\uff44emo",  # full-width look-alike of "demo"
]  # fmt: skip


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_good_paths_pass(path: str) -> None:
    assert validate.secret_path(path) == path
    assert validate.config_key(path) == path


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_are_invalid_argument(path: str) -> None:
    with pytest.raises(InvalidArgument):
        validate.secret_path(path)
    with pytest.raises(InvalidArgument):
        validate.config_key(path)


def test_prefix_may_end_with_slash_but_key_may_not() -> None:
    assert validate.config_prefix("config/demo/") == "config/demo/"
    with pytest.raises(InvalidArgument, match="must not start or end"):
        validate.config_key("config/demo/")


def test_messages_say_what_to_fix() -> None:
    with pytest.raises(InvalidArgument, match=r"'\.\.' segments"):
        validate.secret_path("a/../b")
    with pytest.raises(InvalidArgument, match="limit is 512"):
        validate.secret_path("a" * 600)
    with pytest.raises(InvalidArgument, match="role is required"):
        validate.name("role", "")


@pytest.mark.parametrize("value", ["", "-x", "a/b", "a b", "x" * 129, "*"])
def test_bad_names(value: str) -> None:
    with pytest.raises(InvalidArgument):
        validate.name("role", value)


def test_mount_defaults_and_rejects_traversal() -> None:
    assert validate.mount("", "secret") == "secret"
    assert validate.mount("kv-2", "secret") == "kv-2"
    for bad in ("..", "a/b", "sys/../x"):
        with pytest.raises(InvalidArgument):
            validate.mount(bad, "secret")


def test_increment_bounds() -> None:
    assert validate.increment_seconds(None) is None
    assert validate.increment_seconds(30) == 30
    with pytest.raises(InvalidArgument):
        validate.increment_seconds(-1)
