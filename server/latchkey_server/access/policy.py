"""latchkey's policy language: rules, patterns, and the deny-by-default decision.

A policy file is HCL (parsed by pyhcl), or the JSON form of it, made of rule blocks:

    # kind     pattern                     capabilities
    secret   "secret/data/billing/*"    { capabilities = ["read"] }
    database "billing-*"                { capabilities = ["read", "watch", "renew", "revoke"] }
    config   "billing/"                 { capabilities = ["read", "watch"] }
    service  "payments"                 { capabilities = ["discover"] }
    secret   "secret/data/billing/root" { capabilities = ["deny"] }

    {"secret": {"secret/data/billing/*": {"capabilities": ["read"]}}}      # the same, as JSON

In JSON a kind may also map to a list of such objects. Every block has exactly one key,
`capabilities`, a list of names valid for its kind (`CAPABILITIES`); `deny` is valid for every
kind. A file may not repeat a block (same kind and pattern) or a key: pyhcl would silently merge
or overwrite them, which could drop a `deny`, so they are refused.

Resources are the exact strings the servicers pass to `Authorizer.authorize`:

    secret    "<mount>/data/<path>"   read
    database  "<role>"                read, watch, renew, revoke, revoke_any, list_leases
              "*"                     list_leases over every role
    config    "<key>" or "<prefix>"   read (Get of a key, List of a prefix), watch (a prefix)
    service   "<service>"             discover, register
    gateway   "<name>"                status

Patterns (matching is case-sensitive, on whole strings; segments are separated by `/`):

- A pattern is a literal path: `payments` matches exactly `payments`.
- A trailing `*` matches any suffix, including `/` and the empty string: `billing-*` matches
  `billing-`, `billing-ro` and `billing-ro/x`; `*` alone matches every resource. `*` anywhere
  else in a pattern is refused when the file is loaded (it would look like a glob but isn't).
- `+` as a whole segment matches exactly one non-empty segment: `secret/data/+/db` matches
  `secret/data/billing/db`, not `secret/data/db` nor `secret/data/a/b/db`. A `+` that is not a
  whole segment (`a+b`, or the `+*` of `a/+*`) is a literal `+`.
- No other character is special (`?`, `[`, `{`, `\\`, `.` are literals).
- For `config` only, a pattern ending in `/` is a prefix grant: it covers that prefix and every
  key under it, exactly as if it ended in `/*`. `config "billing/"` allows Watch/List of prefix
  `billing/` and Get of `billing/x`, but not of `billingx` (nor List of prefix `billing`). For
  the other kinds a pattern ending in `/` could never match and is refused.
- Patterns must be clean paths: no empty, `.` or `..` segments, no leading `/`, no `%`, `\\`
  or non-printable characters (controls, line separators), and NFKC-normalised Unicode.

Requests are always literals: a `*` or `+` in a resource is just that character. A resource
that is not a clean path (empty, `..` or `.` or empty segments, `//`, a leading `/`, a trailing
`/` other than on a config prefix, `%`, `\\`, non-printable characters, or text that NFKC
normalisation would change, such as full-width look-alikes) is denied outright, whatever the
policies say: the servicers never pass one, so seeing one means validation was bypassed.

Decision (deny by default): take every rule, across all the policies bound to the identity,
whose kind is the request's kind and whose pattern matches the resource.

1. If any of them has `deny`, the request is denied (explicit deny wins over everything).
2. Otherwise it is allowed iff the capability is in the union of their capabilities.
3. With no matching rule at all, it is denied.

Because a deny wins whatever the other rules say, taking the union of the remaining grants is
the same as: "a request is allowed only if some rule grants it and no deny covers it". There is
no "most specific rule" ordering to reason about: a broader grant never overrides a narrower
deny, and a narrower grant never re-opens a broader deny.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl
from hcl.api import isHcl
from hcl.lexer import Lexer

from latchkey_server.access.authz import ResourceKind
from latchkey_server.errors import InvalidArgument

DENY = "deny"

CAPABILITIES: Mapping[ResourceKind, frozenset[str]] = {
    ResourceKind.SECRET: frozenset({"read", DENY}),
    ResourceKind.DATABASE: frozenset(
        {"read", "watch", "renew", "revoke", "revoke_any", "list_leases", DENY}
    ),
    ResourceKind.CONFIG: frozenset({"read", "watch", DENY}),
    ResourceKind.SERVICE: frozenset({"discover", "register", DENY}),
    ResourceKind.GATEWAY: frozenset({"status", DENY}),
}
"""The capabilities each resource kind accepts in a policy (and in a request, except deny)."""

_KINDS = {kind.value: kind for kind in ResourceKind}
_BODY_KEY = "capabilities"
MAX_RESOURCE = 1024
"""Longer resources are denied outright (the servicers' limits are lower)."""


# ---------------------------------------------------------------- clean paths


def _unclean(text: str, *, allow_trailing_slash: bool) -> str | None:
    """Why `text` is not a clean path, or None when it is."""
    if not text:
        return "it is empty"
    if len(text) > MAX_RESOURCE:
        return f"it is longer than {MAX_RESOURCE} characters"
    if unicodedata.normalize("NFKC", text) != text:
        return "it is not NFKC-normalised Unicode (look-alike characters?)"
    for char in text:
        if char in "%\\" or not char.isprintable():
            return f"it contains {char!r}"
    if text.startswith("/"):
        return "it starts with '/'"
    body = text[:-1] if allow_trailing_slash and text.endswith("/") else text
    for segment in body.split("/"):
        if not segment:
            return "it has an empty segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"it has a {segment!r} segment"
    return None


def is_clean_resource(kind: ResourceKind, resource: str) -> bool:
    """Whether `resource` is a clean path that may be matched at all (see the module doc)."""
    return _unclean(resource, allow_trailing_slash=kind is ResourceKind.CONFIG) is None


# ---------------------------------------------------------------- patterns


@dataclass(frozen=True, slots=True)
class Pattern:
    """A parsed resource pattern; `matches` takes a literal resource string."""

    text: str
    """The pattern as written in the policy file."""
    segments: tuple[str, ...]
    """The segments to match one by one (for a prefix pattern, all but the partial last)."""
    tail: str | None
    """For a prefix pattern, the start the next part of the resource must have; else None."""

    @classmethod
    def parse(cls, kind: ResourceKind, text: str) -> Pattern:
        """Parse `text`; raise `ValueError` with the reason when it is not a valid pattern."""
        body = text
        if text.endswith("/"):
            if kind is not ResourceKind.CONFIG:
                raise ValueError(
                    f"a {kind.value} pattern ending in '/' never matches; "
                    f"use '{text}*' for a prefix"
                )
            body = text + "*"
        if body == "*":
            return cls(text=text, segments=(), tail="")
        prefix = body[:-1] if body.endswith("*") else body
        if "*" in prefix:
            raise ValueError("'*' is only allowed as the last character")
        reason = _unclean(prefix, allow_trailing_slash=body.endswith("*"))
        if reason is not None:
            raise ValueError(f"the pattern is not a clean path: {reason}")
        parts = prefix.split("/")
        if body.endswith("*"):
            return cls(text=text, segments=tuple(parts[:-1]), tail=parts[-1])
        return cls(text=text, segments=tuple(parts), tail=None)

    def matches(self, resource: str) -> bool:
        """Whether the literal `resource` is covered (no character of it is ever special)."""
        parts = resource.split("/")
        fixed = len(self.segments)
        if self.tail is None:
            if len(parts) != fixed:
                return False
        elif len(parts) <= fixed or not parts[fixed].startswith(self.tail):
            return False
        for want, got in zip(self.segments, parts, strict=False):
            if want == "+":
                if not got:
                    return False
            elif want != got:
                return False
        return True


# ---------------------------------------------------------------- rules and decisions


@dataclass(frozen=True, slots=True)
class Rule:
    kind: ResourceKind
    pattern: Pattern
    capabilities: frozenset[str]
    source: str = ""
    """Where the rule was written (policy file), for messages."""

    @property
    def denies(self) -> bool:
        return DENY in self.capabilities


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    rules: tuple[Rule, ...]
    source: str = ""
    """The file the policy was loaded from."""


def decide(rules: Iterable[Rule], kind: ResourceKind, resource: str, capability: str) -> bool:
    """Deny by default; any matching deny wins; else allowed iff a matching rule grants it."""
    if capability == DENY or capability not in CAPABILITIES[kind]:
        return False
    if not is_clean_resource(kind, resource):
        return False
    granted = False
    for rule in rules:
        if rule.kind is not kind or not rule.pattern.matches(resource):
            continue
        if rule.denies:
            return False
        granted = granted or capability in rule.capabilities
    return granted


# ---------------------------------------------------------------- parsing


def parse_policy(text: str, *, name: str, source: str = "<policy>") -> Policy:
    """Parse one policy document (HCL or JSON). Raise `InvalidArgument` naming `source`."""
    document = load_hcl(text, source=source, body_key=_BODY_KEY)
    rules: list[Rule] = []
    for kind_name, blocks in document.items():
        kind = _KINDS.get(kind_name)
        if kind is None:
            raise InvalidArgument(
                f"policy file {source}: unknown resource kind {kind_name!r}; "
                f"expected one of {', '.join(sorted(_KINDS))}"
            )
        for pattern_text, body in _blocks(source, kind_name, blocks):
            rules.append(_rule(source, kind, pattern_text, body))
    return Policy(name=name, rules=tuple(rules), source=source)


def load_policy(path: Path) -> Policy:
    """Read and parse a policy file; its name is the file's stem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"policy file {path} cannot be read: {type(exc).__name__}") from exc
    return parse_policy(text, name=path.stem, source=str(path))


def _blocks(source: str, kind: str, blocks: object) -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for group in blocks if isinstance(blocks, list) else [blocks]:
        if not isinstance(group, dict):
            raise InvalidArgument(
                f'policy file {source}: {kind} rules must look like {kind} "<pattern>" '
                "{ capabilities = [...] }"
            )
        found.extend(group.items())
    return found


def _rule(source: str, kind: ResourceKind, pattern_text: str, body: object) -> Rule:
    where = f"policy file {source}: {kind.value} {pattern_text!r}"
    if not isinstance(body, dict):
        raise InvalidArgument(f"{where}: expected a block {{ capabilities = [...] }}")
    unknown = sorted(str(key) for key in body if key != _BODY_KEY)
    if unknown:
        raise InvalidArgument(
            f"{where}: unknown key {unknown[0]!r}; a rule has only 'capabilities'"
        )
    capabilities = body.get(_BODY_KEY)
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        raise InvalidArgument(f"{where}: 'capabilities' must be a list of strings")
    if not capabilities:
        raise InvalidArgument(f"{where}: 'capabilities' is empty; use [\"deny\"] to deny")
    valid = CAPABILITIES[kind]
    for capability in capabilities:
        if capability not in valid:
            raise InvalidArgument(
                f"{where}: unknown capability {capability!r}; "
                f"{kind.value} accepts {', '.join(sorted(valid))}"
            )
    try:
        pattern = Pattern.parse(kind, pattern_text)
    except ValueError as exc:
        raise InvalidArgument(f"{where}: invalid pattern: {exc}") from None
    return Rule(kind=kind, pattern=pattern, capabilities=frozenset(capabilities), source=source)


def load_hcl(text: str, *, source: str, body_key: str) -> dict[str, Any]:
    """Parse HCL or JSON with pyhcl, refusing what pyhcl would silently merge or drop.

    pyhcl merges repeated blocks and keys (last one wins), which could drop a deny. Each block
    of a well-formed file assigns `body_key` exactly once, so the document is refused unless
    the number of `body_key =` assignments in the source equals the number in the result.
    """
    if not text.strip():
        return {}
    try:
        is_hcl = bool(isHcl(text))
    except ValueError:
        is_hcl = True
    try:
        if not is_hcl:
            json.loads(text, object_pairs_hook=_no_duplicate_keys)
        document = hcl.loads(text)
        written = _count_assignments(text, body_key) if is_hcl else None
    except _DuplicateKey as exc:
        raise InvalidArgument(f"file {source}: key {exc.args[0]!r} appears twice") from None
    except Exception as exc:  # pyhcl raises ValueError and, on odd input, other errors
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidArgument(f"file {source} is not valid HCL or JSON: {message}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"file {source}: expected blocks at the top level")
    if written is not None and written != _count_values(document, body_key):
        raise InvalidArgument(
            f"file {source}: a block or a {body_key!r} key is repeated; merge them into one"
        )
    return document


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _count_assignments(text: str, key: str) -> int:
    lexer = Lexer()
    lexer.input(text)
    count = 0
    previous: Any = None
    while True:
        token = lexer.token()
        if token is None:
            return count
        if token.type in ("COMMENT", "MULTICOMMENT"):
            continue
        if (
            token.type == "EQUAL"
            and previous is not None
            and previous.type in ("IDENTIFIER", "STRING")
            and previous.value == key
        ):
            count += 1
        previous = token


def _count_values(value: object, key: str) -> int:
    if isinstance(value, dict):
        return sum((1 if k == key else 0) + _count_values(v, key) for k, v in value.items())
    if isinstance(value, list):
        return sum(_count_values(v, key) for v in value)
    return 0
