"""Policy sets: which policies apply to which identity, and the authorizer built on them.

A policy directory (the repository's `policies/` by default) holds:

- `<name>.hcl`: one policy per file, named after the file's stem (HCL or JSON content; see
  `access/policy.py` for the language). Hidden files and subdirectories are ignored.
- `bindings.hcl`: which identities get which policies (the name `bindings` is reserved):

      # identity (exact, or ending in '*' to match any suffix)   policies
      binding "billing"                      { policies = ["app"] }
      binding "spiffe://example.org/billing" { policies = ["app"] }
      binding "spiffe://example.org/ops/*"   { policies = ["operator", "auditor"] }

  Identities are the names authentication establishes: a token's identity (`billing`) or an
  mTLS identity (`spiffe://...`). Matching is exact and case-sensitive; only a trailing `*` is
  special. An identity gets the policies of every binding that matches it; an identity with no
  binding gets nothing, so every request it makes is denied.

Loading is all-or-nothing: any invalid file, or a binding naming a policy that does not exist,
raises `InvalidArgument` naming the file and the problem, so a caller can keep the previous set.
`PolicyStore` does exactly that on `reload()`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from latchkey_server.access.authz import ResourceKind
from latchkey_server.access.policy import Policy, Rule, decide, load_hcl, load_policy
from latchkey_server.errors import InvalidArgument, PermissionDenied
from latchkey_server.filewatch import Signature, signature
from latchkey_server.models import Identity

log = logging.getLogger("latchkey.access.policies")

DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[3] / "policies"
"""The repository's `policies/` directory."""
BINDINGS_FILE = "bindings.hcl"
_POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_SHOWN = 200


@dataclass(frozen=True, slots=True)
class Binding:
    identity: str
    """An exact identity, or one ending in `*` (matches any suffix, including empty)."""
    policies: tuple[str, ...]

    def matches(self, identity: str) -> bool:
        if self.identity.endswith("*"):
            return identity.startswith(self.identity[:-1])
        return identity == self.identity


_MEMO_LIMIT = 65536


class PolicySet:
    """Named policies plus bindings; answers `allows` for an identity."""

    def __init__(self, policies: Mapping[str, Policy], bindings: tuple[Binding, ...]) -> None:
        for binding in bindings:
            for name in binding.policies:
                if name not in policies:
                    raise InvalidArgument(
                        f"binding {binding.identity!r} names unknown policy {name!r}; "
                        f"known: {', '.join(sorted(policies)) or 'none'}"
                    )
        self.policies: Mapping[str, Policy] = dict(policies)
        self.bindings = bindings
        # A PolicySet never changes (a reload builds a new one), so decisions can be memoised.
        self._rules: dict[str, tuple[Rule, ...]] = {}
        self._decisions: dict[tuple[str, ResourceKind, str, str], bool] = {}

    @classmethod
    def load(cls, directory: Path = DEFAULT_POLICY_DIR) -> PolicySet:
        """Load every policy and the bindings; raise `InvalidArgument` on any problem."""
        if not directory.is_dir():
            raise InvalidArgument(f"policy directory {directory} does not exist")
        policies: dict[str, Policy] = {}
        for path in _policy_files(directory):
            if not _POLICY_NAME.match(path.stem):
                raise InvalidArgument(
                    f"policy file {path}: the name {path.stem!r} must be letters, digits, "
                    "'.', '_' or '-'"
                )
            policies[path.stem] = load_policy(path)
        bindings = load_bindings(directory / BINDINGS_FILE)
        try:
            return cls(policies, bindings)
        except InvalidArgument as exc:
            raise InvalidArgument(f"bindings file {directory / BINDINGS_FILE}: {exc}") from None

    def policies_for(self, identity: str) -> tuple[str, ...]:
        """The names of the policies bound to `identity`, in binding order, without repeats."""
        names: dict[str, None] = {}
        for binding in self.bindings:
            if binding.matches(identity):
                names.update(dict.fromkeys(binding.policies))
        return tuple(names)

    def rules_for(self, identity: str) -> tuple[Rule, ...]:
        rules = self._rules.get(identity)
        if rules is None:
            if len(self._rules) >= _MEMO_LIMIT:
                self._rules.clear()
            rules = self._rules[identity] = tuple(
                rule for name in self.policies_for(identity) for rule in self.policies[name].rules
            )
        return rules

    def allows(
        self, identity: Identity | str, kind: ResourceKind, resource: str, capability: str
    ) -> bool:
        name = identity.name if isinstance(identity, Identity) else identity
        key = (name, kind, resource, capability)
        decision = self._decisions.get(key)
        if decision is None:
            if len(self._decisions) >= _MEMO_LIMIT:
                self._decisions.clear()  # bounded memory; only costs recomputation
            decision = self._decisions[key] = decide(
                self.rules_for(name), kind, resource, capability
            )
        return decision


def load_bindings(path: Path) -> tuple[Binding, ...]:
    """Parse a bindings file (see the module doc). A missing file binds nobody."""
    if not path.exists():
        return ()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"bindings file {path} cannot be read: {type(exc).__name__}") from exc
    document = load_hcl(text, source=str(path), body_key="policies")
    unknown = sorted(key for key in document if key != "binding")
    if unknown:
        raise InvalidArgument(
            f'bindings file {path}: unknown block {unknown[0]!r}; expected binding "<identity>" '
            "{ policies = [...] }"
        )
    blocks = document.get("binding", {})
    groups = blocks if isinstance(blocks, list) else [blocks]
    bindings: list[Binding] = []
    for group in groups:
        if not isinstance(group, dict):
            raise InvalidArgument(
                f'bindings file {path}: expected binding "<identity>" {{ policies = [...] }}'
            )
        for identity, body in group.items():
            where = f"bindings file {path}: binding {identity!r}"
            if not identity:
                raise InvalidArgument(f"{where}: the identity is empty")
            if "*" in identity[:-1]:
                raise InvalidArgument(f"{where}: '*' is only allowed as the last character")
            if not isinstance(body, dict) or set(body) != {"policies"}:
                raise InvalidArgument(f"{where}: expected exactly {{ policies = [...] }}")
            names = body["policies"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise InvalidArgument(f"{where}: 'policies' must be a list of policy names")
            bindings.append(Binding(identity=identity, policies=tuple(names)))
    return tuple(bindings)


def _policy_files(directory: Path) -> list[Path]:
    return sorted(
        path
        for path in directory.glob("*.hcl")
        if path.is_file() and not path.name.startswith(".") and path.name != BINDINGS_FILE
    )


def _fingerprint(directory: Path) -> Signature:
    """The stat signature of the files a load reads (for cheap change polling)."""
    paths = [*_policy_files(directory), directory / BINDINGS_FILE] if directory.is_dir() else []
    return signature(paths)


def _shown(text: str) -> str:
    """`text` quoted for a message: escaped, and cut when very long."""
    shown = text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
    return repr(shown)


# ---------------------------------------------------------------- authorizer and store


class SupportsAllows(Protocol):
    def allows(
        self, identity: Identity | str, kind: ResourceKind, resource: str, capability: str
    ) -> bool: ...


class PolicyAuthorizer:
    """The `Authorizer` backed by policies (a fixed `PolicySet` or a reloading `PolicyStore`)."""

    def __init__(self, policies: SupportsAllows) -> None:
        self._policies = policies

    def allows(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> bool:
        return self._policies.allows(identity, kind, resource, capability)

    def authorize(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> None:
        if not self._policies.allows(identity, kind, resource, capability):
            raise PermissionDenied(
                f"identity {_shown(identity.name)} may not {_shown(capability)[1:-1]} "
                f"{kind.value} {_shown(resource)}"
            )


class PolicyStore:
    """Holds the current `PolicySet`; `reload()` swaps in a new one only if it is valid."""

    def __init__(self, directory: Path = DEFAULT_POLICY_DIR) -> None:
        """Load the initial set; raises `InvalidArgument` if it is invalid (fail at startup)."""
        self.directory = directory
        self._fingerprint = _fingerprint(directory)
        self._current = PolicySet.load(directory)
        self.generation = 1
        """Incremented on every successful reload (streams compare it to re-check access)."""

    @property
    def current(self) -> PolicySet:
        return self._current

    def changed(self) -> bool:
        """Whether the files differ (by name, mtime, size) from those last loaded or tried."""
        return _fingerprint(self.directory) != self._fingerprint

    def reload(self) -> bool:
        """Load the directory again; on failure log why, keep the old set, return False."""
        fingerprint = _fingerprint(self.directory)
        try:
            loaded = PolicySet.load(self.directory)
        except InvalidArgument as exc:
            self._fingerprint = fingerprint
            log.error("policies not reloaded, keeping generation %d: %s", self.generation, exc)
            return False
        self._fingerprint = fingerprint
        self._current = loaded
        self.generation += 1
        log.info("policies reloaded from %s: generation %d", self.directory, self.generation)
        return True

    def allows(
        self, identity: Identity | str, kind: ResourceKind, resource: str, capability: str
    ) -> bool:
        return self._current.allows(identity, kind, resource, capability)
