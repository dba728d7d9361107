"""Choosing one instance from a live set (no I/O)."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Sequence
from typing import Literal

from latchkey._errors import NoHealthyInstances
from latchkey._models import Instance

Strategy = Literal["round_robin", "random"]


class Picker:
    """Round-robin or random choice over whatever the instance set is right now."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}
        self._lock = threading.Lock()

    def pick(self, service: str, instances: Sequence[Instance], strategy: Strategy) -> Instance:
        if not instances:
            raise NoHealthyInstances(f"no healthy instance of service {service!r}")
        ordered = sorted(instances, key=lambda i: i.id)
        if strategy == "random":
            return random.choice(ordered)
        if strategy != "round_robin":
            raise ValueError(f"unknown strategy {strategy!r}: use 'round_robin' or 'random'")
        with self._lock:
            counter = self._counters.setdefault(service, itertools.count())
            n = next(counter)
        return ordered[n % len(ordered)]
