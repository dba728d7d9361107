"""Durations (Go-style parse and format) and Vault's single TTL rule, CalculateTTL."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from latchkey_server.devvault.errors import BadRequest

SYSTEM_DEFAULT_TTL = 768 * 3600
SYSTEM_MAX_TTL = 768 * 3600

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)")


class DurationError(ValueError):
    """A value that is not a duration."""


def parse_duration(value: object) -> int:
    """Whole seconds from an int, a numeric string, or a Go duration string (``1h30m``)."""
    if isinstance(value, bool):
        raise DurationError(f"invalid duration {value!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float):
        seconds = int(value)
    elif isinstance(value, str):
        seconds = _parse_duration_string(value.strip())
    else:
        raise DurationError(f"invalid duration {value!r}")
    if seconds < 0:
        raise DurationError("duration must not be negative")
    return seconds


def _parse_duration_string(text: str) -> int:
    if text == "":
        return 0
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    sign = 1
    if text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            raise DurationError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * int(total)


def format_duration(seconds: int) -> str:
    """Go-style without zero units: ``1h``, ``59m58s``, ``5m``, ``0s``."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs:
        parts.append(f"{secs}s")
    return sign + "".join(parts)


def go_duration(seconds: int) -> str:
    """Go's ``time.Duration.String()`` (keeps zero units: ``1h0m0s``)."""
    if seconds == 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True)
class MountTTLs:
    """A mount's effective default and max lease TTLs, in seconds."""

    default_ttl: int = SYSTEM_DEFAULT_TTL
    max_ttl: int = SYSTEM_MAX_TTL


@dataclass
class TTLResult:
    ttl: int
    warnings: list[str] = field(default_factory=list)


def calculate_ttl(
    *,
    now: float,
    increment: int,
    backend_ttl: int,
    period: int,
    backend_max_ttl: int,
    explicit_max_ttl: int,
    start: float,
    mount: MountTTLs,
) -> TTLResult:
    """The TTL for a new or renewed lease/token (reference §1.9). Raises ``BadRequest``."""
    now_s = int(now)
    start_s = int(start)
    warnings: list[str] = []
    max_ttl = mount.max_ttl
    if 0 < backend_max_ttl < max_ttl:
        max_ttl = backend_max_ttl
    if 0 < explicit_max_ttl < max_ttl:
        max_ttl = explicit_max_ttl

    if period > 0:
        ttl = period
        if 0 < max_ttl < ttl:
            warnings.append(
                f'Period of "{format_duration(ttl)}" exceeded the effective max_ttl of '
                f'"{format_duration(max_ttl)}"; Period value is capped accordingly'
            )
            ttl = max_ttl
        if explicit_max_ttl > 0:
            remaining = start_s + explicit_max_ttl - now_s
            if remaining <= 0:
                raise BadRequest("past the max TTL, cannot renew")
            if remaining < ttl:
                warnings.append(_capped(ttl, remaining))
                ttl = remaining
        return TTLResult(ttl, warnings)

    if increment > 0:
        ttl = increment
    elif backend_ttl > 0:
        ttl = backend_ttl
    else:
        ttl = mount.default_ttl
    remaining = start_s + max_ttl - now_s
    if remaining <= 0:
        raise BadRequest("past the max TTL, cannot renew")
    if remaining < ttl:
        warnings.append(_capped(ttl, remaining))
        ttl = remaining
    return TTLResult(ttl, warnings)


def _capped(ttl: int, remaining: int) -> str:
    return (
        f'TTL of "{format_duration(ttl)}" exceeded the effective max_ttl of '
        f'"{format_duration(remaining)}"; TTL value is capped accordingly'
    )
