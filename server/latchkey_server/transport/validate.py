"""Validation of everything a caller sends. Raises `InvalidArgument` with what to fix."""

from __future__ import annotations

import re

from latchkey_server.errors import InvalidArgument

MAX_PATH = 512
MAX_NAME = 128
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_PATH = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TAG = re.compile(r"^[A-Za-z0-9._:=-]+$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _path(field: str, value: str, *, allow_trailing_slash: bool) -> str:
    body = value[:-1] if allow_trailing_slash and value.endswith("/") else value
    if len(value) <= MAX_PATH and _PATH.fullmatch(body):
        wrapped = f"/{body}/"
        if "/./" not in wrapped and "/../" not in wrapped:
            return value  # the common case, checked at once; below: which rule it breaks
    if not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > MAX_PATH:
        raise InvalidArgument(f"{field} is {len(value)} characters; the limit is {MAX_PATH}")
    if body.startswith("/") or body.endswith("/"):
        raise InvalidArgument(f"{field} must not start or end with '/'")
    for segment in body.split("/"):
        if not segment:
            raise InvalidArgument(f"{field} must not contain empty segments ('//')")
        if segment in (".", ".."):
            raise InvalidArgument(f"{field} must not contain '.' or '..' segments")
        if not _SEGMENT.match(segment):
            raise InvalidArgument(
                f"{field} may contain only letters, digits, '.', '_', '-' and '/' separators"
            )
    return value


def secret_path(value: str) -> str:
    return _path("path", value, allow_trailing_slash=False)


def config_key(value: str) -> str:
    return _path("key", value, allow_trailing_slash=False)


def config_prefix(value: str) -> str:
    return _path("prefix", value, allow_trailing_slash=True)


def lease_id(value: str) -> str:
    return _path("lease_id", value, allow_trailing_slash=False)


def mount(value: str, default: str) -> str:
    if not value:
        return default
    if not _MOUNT.match(value):
        raise InvalidArgument("mount may contain only letters, digits, '_' and '-' (max 64)")
    return value


def name(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > MAX_NAME or not _NAME.match(value):
        raise InvalidArgument(
            f"{field} must be 1-{MAX_NAME} letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return value


def optional_name(field: str, value: str) -> str:
    return name(field, value) if value else ""


def tag(value: str) -> str:
    if value and (len(value) > MAX_NAME or not _TAG.match(value)):
        raise InvalidArgument(f"tag must be at most {MAX_NAME} of letters, digits, '.:=_-'")
    return value


_EPOCH = re.compile(r"^[A-Za-z0-9_-]{0,64}$")


def epoch(value: str) -> str:
    """An epoch the client got from a snapshot ('' when it has none)."""
    if not _EPOCH.match(value):
        raise InvalidArgument("resume_epoch must be the epoch of a snapshot (up to 64 characters)")
    return value


def opaque_id(field: str, value: str) -> str:
    if not _ID.match(value):
        raise InvalidArgument(f"{field} must be 1-64 letters, digits, '_' or '-'")
    return value


MAX_INCREMENT = 366 * 86400


def duration_seconds(field: str, seconds: int, nanos: int, *, limit: int = MAX_INCREMENT) -> float:
    """A google.protobuf.Duration's (seconds, nanos) as seconds, checked before any conversion
    (a huge `seconds` would overflow Python's timedelta)."""
    if not 0 <= seconds <= limit or not 0 <= nanos < 1_000_000_000 or (seconds == limit and nanos):
        raise InvalidArgument(
            f"{field} must be a duration between 0 and {limit // 86400} days "
            "(seconds and nanos not negative, nanos below 1e9)"
        )
    return seconds + nanos / 1e9


def increment_seconds(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    if seconds < 0 or seconds > MAX_INCREMENT:
        raise InvalidArgument("increment must be between 0 and 366 days")
    return seconds


_GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_GO_UNIT = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(field: str, value: str, *, default: float, low: float, high: float) -> float:
    """A Consul (Go) duration such as "10s", "1m30s" or "500ms", in seconds, within
    [low, high]; empty gives `default`."""
    if not value:
        return default
    if len(value) > 32 or not _GO_DURATION.match(value):
        raise InvalidArgument(
            f"{field} {value[:32]!r} is not a duration: write it as Consul does, e.g. "
            '"10s", "1m30s" or "500ms"'
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _GO_UNIT.findall(value))
    if not low <= seconds <= high:
        raise InvalidArgument(
            f"{field} is {value}; it must be between {_human(low)} and {_human(high)}"
        )
    return seconds


def _human(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
