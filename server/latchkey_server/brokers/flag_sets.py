"""flagd flag sets kept in Consul KV, merged into the one document a flagd sync stream carries.

Every key under a prefix is one flag set in flagd's flag-definition format
(`{"flags": {...}, "$evaluators": {...}, "metadata": {...}}`). A flagd sync client takes one
document, so the sets are merged: each set's `$ref`s are resolved against its own `$evaluators`,
its `metadata` becomes the default metadata of its flags, and when two sets define the same
flag the one whose key sorts first wins (as in the Python SDK's provider). A key whose value is
not a flag set is left out and named, so that one bad write cannot take every flag away.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("latchkey.flags")


@dataclass(frozen=True)
class MergedFlags:
    document: str
    """The merged flagd document, as JSON (keys sorted, so equal content gives equal text)."""
    invalid: tuple[str, ...]
    """Keys whose value is not a flagd flag set (left out)."""


def merge_flag_sets(values: Mapping[str, bytes]) -> MergedFlags:
    flags: dict[str, Any] = {}
    owner: dict[str, str] = {}
    invalid: list[str] = []
    for key in sorted(values):
        try:
            flag_set = _flag_set(values[key])
        except ValueError as exc:
            log.warning("flag set %s is not a valid flagd document: %s; left out", key, exc)
            invalid.append(key)
            continue
        for name, spec in flag_set.items():
            if name in flags:
                log.warning("flag %r is defined in %s and %s; using %s", name, owner[name], key,
                            owner[name])  # fmt: skip
                continue
            flags[name] = spec
            owner[name] = key
    return MergedFlags(json.dumps({"flags": flags}, sort_keys=True), tuple(invalid))


def _flag_set(raw: bytes) -> dict[str, Any]:
    """The flags of one set, `$ref`s resolved and set metadata folded in; ValueError if not a
    flag set."""
    document = json.loads(raw.decode("utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("flags"), dict):
        raise ValueError('expected a JSON object with a "flags" object')
    evaluators = document.get("$evaluators") or {}
    metadata = document.get("metadata") or {}
    if not isinstance(evaluators, dict) or not isinstance(metadata, dict):
        raise ValueError('"$evaluators" and "metadata" must be objects')
    out: dict[str, Any] = {}
    for name, spec in document["flags"].items():
        if not isinstance(spec, dict):
            raise ValueError(f"flag {name!r} must be an object")
        spec = _resolve_refs(spec, evaluators)
        if metadata:
            spec["metadata"] = {**metadata, **(spec.get("metadata") or {})}
        out[name] = spec
    return out


def _resolve_refs(node: Any, evaluators: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            name = node["$ref"]
            if name not in evaluators:
                raise ValueError(f"$ref {name!r} names no entry of $evaluators")
            return _resolve_refs(evaluators[name], evaluators)
        return {k: _resolve_refs(v, evaluators) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_refs(v, evaluators) for v in node]
    return node
