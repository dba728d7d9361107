"""Figures, the table printed to stdout and `.latchkey/bench.json`."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True)
class Peer:
    """The figure a measurement is compared with (measured in the same run)."""

    name: str
    value: float
    unit: str


@dataclass
class Figure:
    """One measured number, optionally against its peer and a target."""

    name: str
    value: float
    unit: str
    group: str = ""
    peer: Peer | None = None
    ratio: float | None = None
    """value / peer.value (None without a peer or when the peer is 0)."""
    target: str | None = None
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "value": _finite(self.value),
            "unit": self.unit,
            "peer": None
            if self.peer is None
            else {
                "name": self.peer.name,
                "value": _finite(self.peer.value),
                "unit": self.peer.unit,
            },
            "ratio": _finite(self.ratio),
            "target": self.target,
            "met": self.met,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, 4)


def ratio(value: float, peer: float) -> float | None:
    return value / peer if peer else None


def compared(
    name: str, value: float, unit: str, peer_name: str, peer_value: float, *, group: str = "",
    target: str | None = None, met: bool | None = None, note: str = "", peer_unit: str | None = None,  # noqa: E501
) -> Figure:  # fmt: skip
    """A figure with its peer and the value/peer ratio."""
    return Figure(
        name=name, value=value, unit=unit, group=group,
        peer=Peer(peer_name, peer_value, peer_unit or unit), ratio=ratio(value, peer_value),
        target=target, met=met, note=note,
    )  # fmt: skip


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "grpc": grpc.__version__,
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def document(
    figures: Sequence[Figure], *, quick: bool, settings: dict[str, Any], elapsed: float,
    errors: Sequence[str] = (),
) -> dict[str, Any]:  # fmt: skip
    """The bench.json document: machine facts, settings used, and `figures` (a list)."""
    return {
        "machine": machine(),
        "quick": quick,
        "elapsed_seconds": round(elapsed, 1),
        "settings": settings,
        "errors": list(errors),
        "figures": [f.as_json() for f in figures],
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.3g}" if magnitude < 1 else f"{value:.2f}"
    return f"{value:.2e}"


def _ratio(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    if 0 < abs(value) < 0.01:
        return f"{value:.2g}x"  # e.g. an in-process read against a network hop
    return f"{value:.2f}x"


def table(figures: Sequence[Figure]) -> str:
    """A plain-text table, one row per figure, grouped."""
    header = ("figure", "value", "unit", "peer", "peer value", "ratio", "target", "met")
    rows: list[tuple[str, ...]] = []
    groups: list[tuple[str, int]] = []
    last = None
    for fig in figures:
        if fig.group != last:
            groups.append((fig.group, len(rows)))
            last = fig.group
        met = {True: "yes", False: "NO", None: ""}[fig.met]
        rows.append(
            (
                fig.name,
                _fmt(fig.value),
                fig.unit,
                fig.peer.name if fig.peer else "",
                _fmt(fig.peer.value) if fig.peer else "",
                _ratio(fig.ratio),
                fig.target or "",
                met,
            )
        )
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    numeric = {1, 4, 5}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    starts = dict((start, name) for name, start in groups)
    for index, row in enumerate(rows):
        if starts.get(index):
            out.append(f"[{starts[index]}]")
        out.append(line(row))
    return "\n".join(out)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted samples; nan when empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
