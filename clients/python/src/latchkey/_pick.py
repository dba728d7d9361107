"""Choosing one instance from a live set (no I/O)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Literal

from latchkey._errors import NoHealthyInstances
from latchkey._models import Instance

Strategy = Literal["round_robin", "random"]


class Picker:
    """Round-robin or random choice over whatever the instance set is right now.

    A pick is an in-process read: the set's order (by id) is computed once per set (a new set
    from the gateway is a new list; lists are never changed in place), and the round-robin
    position is an atomic counter, so no lock is taken.
    """

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}
        self._ordered: dict[str, tuple[Sequence[Instance], list[Instance]]] = {}

    def pick(self, service: str, instances: Sequence[Instance], strategy: Strategy) -> Instance:
        if not instances:
            raise NoHealthyInstances(f"no healthy instance of service {service!r}")
        known = self._ordered.get(service)
        if known is None or known[0] is not instances:
            known = self._ordered[service] = (instances, sorted(instances, key=_by_id))
        ordered = known[1]
        if strategy == "round_robin":
            counter = self._counters.get(service)
            if counter is None:
                counter = self._counters.setdefault(service, itertools.count())
            return ordered[next(counter) % len(ordered)]
        if strategy == "random":
            return random.choice(ordered)
        raise ValueError(f"unknown strategy {strategy!r}: use 'round_robin' or 'random'")


def _by_id(instance: Instance) -> str:
    return instance.id
