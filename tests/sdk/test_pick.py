"""Picking from a live set: round-robin by id over the set as it is now (no I/O)."""

from __future__ import annotations

import pytest

from latchkey import Instance, NoHealthyInstances
from latchkey._pick import Picker


def _set(*ids: str) -> list[Instance]:
    return [Instance(id=i, node="n", address="127.0.0.1", port=80) for i in ids]


def test_round_robin_by_id_follows_each_new_set() -> None:
    picker = Picker()
    first = _set("web-2", "web-1")
    assert [picker.pick("web", first, "round_robin").id for _ in range(4)] == [
        "web-1", "web-2", "web-1", "web-2",
    ]  # fmt: skip
    second = _set("web-3", "web-1", "web-2")  # a new set from the gateway is a new list
    picks = {picker.pick("web", second, "round_robin").id for _ in range(3)}
    assert picks == {"web-1", "web-2", "web-3"}
    assert picker.pick("web", second, "random").id in picks
    assert picker.pick("other", _set("x"), "round_robin").id == "x"


def test_empty_set_and_unknown_strategy() -> None:
    picker = Picker()
    with pytest.raises(NoHealthyInstances, match="'web'"):
        picker.pick("web", [], "round_robin")
    with pytest.raises(ValueError, match="unknown strategy"):
        picker.pick("web", _set("a"), "nearest")  # type: ignore[arg-type]
