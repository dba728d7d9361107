"""One module per figure group; each exposes `run(ctx) -> list[Figure]`."""

from __future__ import annotations

from dataclasses import dataclass

from bench.load import LoadGenerator
from bench.stack import Stack


@dataclass
class Context:
    stack: Stack
    load: LoadGenerator
    quick: bool

    @property
    def duration(self) -> float:
        """Seconds per throughput/latency measurement."""
        return 0.8 if self.quick else 4.0

    @property
    def warmup(self) -> float:
        return 0.3 if self.quick else 1.0
