"""ACL policies: HCL/JSON parsing (pyhcl), the policy store, and path matching (reference §7)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import hcl

from latchkey_server.devvault.errors import BadRequest

CAPABILITIES = frozenset(
    {"create", "read", "update", "patch", "delete", "list", "sudo", "deny", "subscribe", "recover"}
)
_LEGACY = {
    "deny": ["deny"],
    "read": ["read", "list"],
    "write": ["create", "read", "update", "delete", "list"],
    "sudo": ["create", "read", "update", "delete", "list", "sudo"],
}

DEFAULT_POLICY = """\
# Built-in default policy of vault-dev: what every token may do on itself.
path "auth/token/lookup-self" {
    capabilities = ["read"]
}
path "auth/token/renew-self" {
    capabilities = ["update"]
}
path "auth/token/revoke-self" {
    capabilities = ["update"]
}
path "sys/capabilities-self" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}
path "sys/leases/lookup" {
    capabilities = ["update"]
}
path "sys/renew" {
    capabilities = ["update"]
}
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}
path "identity/oidc/provider/+/authorize" {
    capabilities = ["read", "update"]
}
path "sys/control-group/request" {
    capabilities = ["update"]
}
"""

# Paths that need `sudo` in addition to the operation's capability (reference §1.8).
_SUDO_PREFIXES = (
    "sys/auth/",
    "sys/leases/revoke-prefix/",
    "sys/leases/revoke-force/",
    "sys/leases/lookup/",
    "sys/revoke-prefix/",
    "sys/revoke-force/",
    "sys/audit",
    "sys/raw",
    "auth/token/revoke-orphan",
)
_SUDO_EXACT = frozenset({"sys/auth", "sys/remount", "sys/rotate"})


def is_sudo_path(path: str) -> bool:
    return path in _SUDO_EXACT or any(path.startswith(p) for p in _SUDO_PREFIXES)


@dataclass(frozen=True)
class PathRule:
    pattern: str
    capabilities: frozenset[str]


@dataclass(frozen=True)
class Policy:
    name: str
    raw: str
    rules: tuple[PathRule, ...]


def parse_policy(name: str, raw: str) -> Policy:
    """Parse HCL or JSON policy text (base64 of either is also accepted)."""
    text = _maybe_base64(raw)
    try:
        tree = hcl.loads(text)
    except Exception as exc:
        raise BadRequest(f"failed to parse policy: {exc}") from exc
    if not isinstance(tree, dict):
        raise BadRequest("failed to parse policy: top level must be an object")
    unknown = sorted(set(tree) - {"path", "name"})
    if unknown:
        raise BadRequest(f"failed to parse policy: invalid key {unknown[0]!r} on line 1")
    rules: list[PathRule] = []
    for pattern, body in _path_blocks(tree.get("path")):
        rules.append(_parse_rule(pattern, body))
    return Policy(name=name, raw=raw, rules=tuple(rules))


def _maybe_base64(raw: str) -> str:
    stripped = raw.strip()
    if not stripped or "path" in stripped or "{" in stripped:
        return raw
    try:
        decoded = base64.b64decode(stripped, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return raw
    return decoded


def _path_blocks(node: Any) -> Iterable[tuple[str, Any]]:
    if node is None:
        return []
    if isinstance(node, dict):
        return list(node.items())
    if isinstance(node, list):
        pairs: list[tuple[str, Any]] = []
        for item in node:
            pairs.extend(_path_blocks(item))
        return pairs
    raise BadRequest("failed to parse policy: 'path' must be a block")


def _parse_rule(pattern: str, body: Any) -> PathRule:
    if not isinstance(body, dict):
        raise BadRequest(f'failed to parse policy: path "{pattern}": expected a block')
    pattern = pattern.lstrip("/")
    if "+*" in pattern:
        raise BadRequest(f'failed to parse policy: path "{pattern}": invalid use of wildcards')
    if "*" in pattern[:-1]:
        raise BadRequest(
            f'failed to parse policy: path "{pattern}": the glob "*" may only be used at the end'
        )
    caps: set[str] = set()
    raw_caps = body.get("capabilities")
    if raw_caps is not None:
        if isinstance(raw_caps, str):
            raw_caps = [raw_caps]
        if not isinstance(raw_caps, list):
            raise BadRequest(f'failed to parse policy: path "{pattern}": invalid capabilities')
        for cap in raw_caps:
            cap_s = str(cap).lower()
            if cap_s not in CAPABILITIES:
                raise BadRequest(
                    f'failed to parse policy: path "{pattern}": invalid capability "{cap_s}"'
                )
            caps.add(cap_s)
    legacy = body.get("policy")
    if legacy is not None:
        if legacy not in _LEGACY:
            raise BadRequest(f'failed to parse policy: path "{pattern}": invalid policy "{legacy}"')
        caps.update(_LEGACY[legacy])
    if "deny" in caps:
        caps = {"deny"}
    return PathRule(pattern=pattern, capabilities=frozenset(caps))


@dataclass
class _Wildcard:
    pattern: str
    capabilities: set[str]
    regex: re.Pattern[str]
    is_prefix: bool
    first_wildcard: int
    plus_count: int
    segments: int


def _merge(into: set[str], caps: frozenset[str]) -> None:
    if "deny" in into:
        return
    if "deny" in caps:
        into.clear()
        into.add("deny")
        return
    into.update(caps)


@dataclass
class ACL:
    """The union of a token's policies, answering "which capabilities on this path?"."""

    root: bool = False
    exact: dict[str, set[str]] = field(default_factory=dict)
    prefix: dict[str, set[str]] = field(default_factory=dict)
    segment: dict[str, _Wildcard] = field(default_factory=dict)

    @classmethod
    def build(cls, policies: Iterable[Policy], *, root: bool = False) -> ACL:
        acl = cls(root=root)
        for policy in policies:
            for rule in policy.rules:
                acl._add(rule)
        return acl

    def _add(self, rule: PathRule) -> None:
        pattern = rule.pattern
        if "+" in pattern:
            existing = self.segment.get(pattern)
            if existing is None:
                existing = _Wildcard(
                    pattern=pattern,
                    capabilities=set(),
                    regex=_segment_regex(pattern),
                    is_prefix=pattern.endswith("*"),
                    first_wildcard=pattern.index("+"),
                    plus_count=pattern.split("/").count("+"),
                    segments=len(pattern.split("/")),
                )
                self.segment[pattern] = existing
            _merge(existing.capabilities, rule.capabilities)
        elif pattern.endswith("*"):
            _merge(self.prefix.setdefault(pattern[:-1], set()), rule.capabilities)
        else:
            _merge(self.exact.setdefault(pattern, set()), rule.capabilities)

    def capabilities(self, path: str, *, is_list: bool = False) -> set[str]:
        """Capabilities granted on ``path`` (``{"deny"}`` when none)."""
        if self.root:
            return {"create", "read", "update", "patch", "delete", "list", "sudo", "root"}
        path = path.lstrip("/")
        if path in self.exact:
            return set(self.exact[path])
        if is_list and path.endswith("/") and path[:-1] in self.exact:
            return set(self.exact[path[:-1]])
        candidates: list[tuple[tuple[int, int, int, int, str], set[str]]] = []
        best_prefix = None
        for prefix in self.prefix:
            if path.startswith(prefix) and (best_prefix is None or len(prefix) > len(best_prefix)):
                best_prefix = prefix
        if best_prefix is not None:
            pattern = best_prefix + "*"
            key = (len(best_prefix), 0, 0, len(pattern), pattern)
            candidates.append((key, self.prefix[best_prefix]))
        for wc in self.segment.values():
            if wc.regex.fullmatch(path):
                key = (
                    wc.first_wildcard,
                    0 if wc.is_prefix else 1,
                    -wc.plus_count,
                    len(wc.pattern),
                    wc.pattern,
                )
                candidates.append((key, wc.capabilities))
        if not candidates:
            return {"deny"}
        candidates.sort(key=lambda c: c[0])
        return set(candidates[-1][1]) or {"deny"}

    def allows(self, path: str, capability: str, *, is_list: bool = False) -> bool:
        caps = self.capabilities(path, is_list=is_list)
        if "root" in caps:
            return True
        if "deny" in caps or capability not in caps:
            return False
        return not (is_sudo_path(path) and "sudo" not in caps)


def _segment_regex(pattern: str) -> re.Pattern[str]:
    prefix = pattern.endswith("*")
    body = pattern[:-1] if prefix else pattern
    parts = [("[^/]*" if seg == "+" else re.escape(seg)) for seg in body.split("/")]
    regex = "/".join(parts)
    return re.compile(regex + (".*" if prefix else ""))


class PolicyStore:
    """Named policies; ``root`` is implicit, ``default`` is built in (and editable)."""

    def __init__(self) -> None:
        self._policies: dict[str, Policy] = {"default": parse_policy("default", DEFAULT_POLICY)}

    def names(self) -> list[str]:
        return sorted({*self._policies, "root"})

    def get(self, name: str) -> Policy | None:
        return self._policies.get(name)

    def put(self, name: str, raw: str) -> None:
        if name == "root":
            raise BadRequest('cannot update "root" policy')
        if not raw.strip():
            raise BadRequest("'policy' parameter not supplied or empty")
        self._policies[name] = parse_policy(name, raw)

    def delete(self, name: str) -> None:
        if name == "root":
            raise BadRequest('cannot delete "root" policy')
        if name == "default":
            raise BadRequest("cannot delete default policy")
        self._policies.pop(name, None)

    def acl_for(self, names: Iterable[str]) -> ACL:
        names = list(names)
        if "root" in names:
            return ACL(root=True)
        return ACL.build(p for n in names if (p := self._policies.get(n)) is not None)
