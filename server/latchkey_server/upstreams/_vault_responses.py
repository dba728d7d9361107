"""Reads the fields of Vault's JSON responses the adapter needs (timestamps, warnings, KV data)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from latchkey_server.errors import NotFound
from latchkey_server.models import KvSecret


def parse_time(raw: object) -> datetime | None:
    """A Vault (Go, RFC 3339) timestamp as an aware datetime; None when absent or unreadable."""
    if not isinstance(raw, str) or not raw:
        return None
    text = raw.replace("Z", "+00:00")
    # Go writes nanoseconds; Python parses at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def response_warnings(resp: Any) -> tuple[str, ...]:
    """The `warnings` Vault attached to a response."""
    raw = resp.get("warnings") if isinstance(resp, dict) else None
    return tuple(str(w) for w in raw) if isinstance(raw, list) else ()


def kv_secret(resp: Any, where: str) -> KvSecret:
    """The secret in a KV v2 read response; NotFound when it holds no data (deleted)."""
    body = resp.get("data") or {}
    meta = body.get("metadata") or {}
    if body.get("data") is None:
        raise NotFound(f"secret {where} not found")
    return KvSecret(
        data=dict(body["data"]),
        version=int(meta.get("version") or 0),
        created_time=parse_time(meta.get("created_time")),
        custom_metadata={str(k): str(v) for k, v in (meta.get("custom_metadata") or {}).items()},
    )


def kv_current_version(resp: Any, where: str) -> int:
    """`current_version` in a KV v2 metadata response; NotFound when the secret has none."""
    body = resp.get("data") if isinstance(resp, dict) else None
    version = int((body or {}).get("current_version") or 0)
    if version <= 0:
        raise NotFound(f"secret {where} not found")
    return version
