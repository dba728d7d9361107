"""Lenient (Go mapstructure "weak") coercion of request fields; ``None`` means "not supplied"."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from latchkey_server.devvault.errors import BadRequest
from latchkey_server.devvault.ttl import DurationError, parse_duration

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(text: str) -> bool | None:
    """Go's ``strconv.ParseBool``; ``None`` when the text is not a boolean."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def get_bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        parsed = parse_bool(value.strip())
        if parsed is not None:
            return parsed
    raise BadRequest(f"error converting input {value!r} for field {key!r}: expected a boolean")


def get_int(data: Mapping[str, Any], key: str, default: int) -> int:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip() or "0")
        except ValueError:
            pass
    raise BadRequest(f"error converting input for field {key!r}: expected an integer")


def get_duration(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key)
    if value is None:
        return default
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise BadRequest(f"error converting input for field {key!r}: {exc}") from exc


def get_str(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    raise BadRequest(f"error converting input for field {key!r}: expected a string")


def get_comma_list(data: Mapping[str, Any], key: str) -> list[str] | None:
    """A JSON list, or a comma-separated string; ``None`` when absent."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    raise BadRequest(f"error converting input for field {key!r}: expected a list")


def get_str_list(data: Mapping[str, Any], key: str) -> list[str] | None:
    """A JSON list, or a single string as one element; ``None`` when absent."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [str(v) for v in value]
    raise BadRequest(f"error converting input for field {key!r}: expected a list of strings")


def get_str_map(data: Mapping[str, Any], key: str) -> dict[str, str] | None:
    """A JSON object of strings, or a JSON-encoded string of one; ``None`` when absent."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise BadRequest(f"error converting input for field {key!r}: not a JSON map") from exc
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    raise BadRequest(f"error converting input for field {key!r}: expected a map of strings")


def sanitize_policies(policies: list[str], *, add_default: bool) -> list[str]:
    """Lower-case, de-duplicate and sort; optionally add ``default`` (never next to ``root``)."""
    result = {p.strip().lower() for p in policies if p.strip()}
    if add_default and "root" not in result:
        result.add("default")
    return sorted(result)
