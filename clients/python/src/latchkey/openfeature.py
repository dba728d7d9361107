"""Feature flags through OpenFeature: flagd flag sets kept in Consul KV, served by latchkey.

    pip install 'latchkey[openfeature]'

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    import latchkey
    from latchkey.openfeature import LatchkeyProvider

    client = latchkey.Client()
    api.set_provider(LatchkeyProvider(client, "flags/production/"))
    flags = api.get_client()
    flags.get_boolean_value("new_ui", False, EvaluationContext(targeting_key="user-42"))

Every key under the prefix is one flag set: a JSON document in flagd's flag-definition format
(`{"flags": {...}, "$evaluators": {...}, "metadata": {...}}`). The provider keeps them live
with `Config.Watch` (one stream for the prefix) and evaluates in-process with flagd's own
evaluator (`openfeature-flagd-core`: JSON Logic targeting, `fractional`, `sem_ver`,
`starts_with`/`ends_with`), so an evaluation is a memory operation.

Events: PROVIDER_READY once the first snapshot is loaded (OpenFeature sends it when
`initialize` returns) and again when the data is fresh after an outage;
PROVIDER_CONFIGURATION_CHANGED with the changed flag keys; PROVIDER_STALE when the gateway
serves cached data (Consul unreachable) or cannot itself be reached, while evaluations go on
with the last known good flags; PROVIDER_ERROR when a flag set under the prefix is not a valid
flagd document (that set keeps its last good version).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, FlagNotFoundError, ParseError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.provider import AbstractProvider, Metadata

from latchkey._models import ConfigEvent, StreamStatus
from latchkey._sync._client import Client
from latchkey._sync._watch import Watch

__all__ = ["FlagInfo", "LatchkeyProvider"]

log = logging.getLogger("latchkey")

T = TypeVar("T")
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


@dataclass(frozen=True)
class FlagInfo:
    """One flag as defined in a flag set (for listing)."""

    key: str
    flag_set: str
    """The Consul key of the flag set that defines it."""
    state: str
    default_variant: str | None
    variants: Mapping[str, Any]
    targeting: bool
    """Whether the flag has targeting rules (else it always serves its default variant)."""


@dataclass(frozen=True)
class _FlagSet:
    key: str
    document: Mapping[str, Any]
    core: FlagdCore


class LatchkeyProvider(AbstractProvider):
    """An OpenFeature provider over the flag sets under `prefix` in Consul KV.

    `client` is a blocking `latchkey.Client` (OpenFeature's Python API is synchronous); the
    provider does not close it. `initialize` (called by `api.set_provider`) blocks until the
    first snapshot is loaded and raises when the gateway refuses the watch.
    """

    def __init__(self, client: Client, prefix: str) -> None:
        super().__init__()
        self._client = client
        self._prefix = prefix
        self._lock = threading.Lock()
        self._sets: dict[str, _FlagSet] = {}
        self._index: dict[str, _FlagSet] = {}
        self._watch: Watch | None = None
        self._ready = False
        self._stale = False
        self._broken: set[str] = set()

    # ------------------------------------------------------------ lifecycle

    def get_metadata(self) -> Metadata:
        return Metadata(name="latchkey")

    def initialize(self, evaluation_context: EvaluationContext | None = None) -> None:
        if self._watch is None:
            self._watch = self._client.config.watch(self._prefix, self._on_event)

    def shutdown(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()

    # ------------------------------------------------------------ what the watch delivers

    def _on_event(self, event: ConfigEvent | StreamStatus) -> None:
        if isinstance(event, StreamStatus):
            self._on_status(event)
            return
        changed: set[str] = set()
        errors: list[str] = []
        with self._lock:
            sets = dict(self._sets)
            for key in [k for k in sets if k not in event.entries]:
                changed |= set(sets.pop(key).document["flags"])
                self._broken.discard(key)
            for key, entry in sorted(event.entries.items()):
                old = sets.get(key)
                if old is not None and self._same(old, entry.text):
                    continue
                try:
                    fresh = _load(key, entry.text)
                except ParseError as exc:
                    why = exc.error_message or "invalid"
                    errors.append(f"flag set {key!r} is not a valid flagd document: {why}")
                    self._broken.add(key)
                    continue  # the last good version of this set (if any) stays in force
                self._broken.discard(key)
                changed |= _changed_flags(old, fresh)
                sets[key] = fresh
            self._sets = sets
            self._index = _index(sets)
            first = not self._ready
            self._ready = True
        for message in errors:
            log.warning("%s; keeping its last good version", message)
            self.emit_provider_error(
                ProviderEventDetails(message=message, error_code=ErrorCode.PARSE_ERROR)
            )
        if not first and changed:  # the first load: OpenFeature reports READY once
            # `initialize` returns
            self.emit_provider_configuration_changed(
                ProviderEventDetails(flags_changed=sorted(changed), message="flags changed")
            )

    @staticmethod
    def _same(old: _FlagSet, text: str) -> bool:
        try:
            return bool(old.document == json.loads(text))
        except ValueError:
            return False

    def _on_status(self, status: StreamStatus) -> None:
        if status.kind in ("stale", "unreachable"):
            if not self._stale:
                self._stale = True
                detail = status.detail or status.kind
                self.emit_provider_stale(
                    ProviderEventDetails(message=f"serving the last known flags: {detail}")
                )
        elif self._stale and self._ready:
            self._stale = False
            self.emit_provider_ready(ProviderEventDetails(message="flags are fresh again"))

    # ------------------------------------------------------------ evaluation

    def _set_for(self, flag_key: str) -> _FlagSet:
        if not self._ready:
            raise ProviderNotReadyError("the latchkey provider has not loaded its flags yet")
        found = self._index.get(flag_key)
        if found is None:
            raise FlagNotFoundError(f"no flag {flag_key!r} under {self._prefix!r}")
        return found

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        core = self._set_for(flag_key).core
        return core.resolve_boolean_value(flag_key, default_value, evaluation_context)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        core = self._set_for(flag_key).core
        return core.resolve_string_value(flag_key, default_value, evaluation_context)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        core = self._set_for(flag_key).core
        return core.resolve_integer_value(flag_key, default_value, evaluation_context)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        core = self._set_for(flag_key).core
        return core.resolve_float_value(flag_key, default_value, evaluation_context)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        core = self._set_for(flag_key).core
        return core.resolve_object_value(flag_key, default_value, evaluation_context)

    def resolve(
        self, flag_key: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[Any]:
        """Evaluate a flag whatever its type (the type of its variants), as the CLI does."""
        flag_set = self._set_for(flag_key)
        variants = flag_set.document["flags"][flag_key].get("variants") or {}
        sample = next(iter(variants.values()), None)
        core, ctx = flag_set.core, evaluation_context
        if isinstance(sample, bool):
            return core.resolve_boolean_value(flag_key, False, ctx)
        if isinstance(sample, str):
            return core.resolve_string_value(flag_key, "", ctx)
        if isinstance(sample, int):
            return core.resolve_integer_value(flag_key, 0, ctx)
        if isinstance(sample, float):
            return core.resolve_float_value(flag_key, 0.0, ctx)
        return core.resolve_object_value(flag_key, {}, ctx)

    def flags(self) -> list[FlagInfo]:
        """Every flag under the prefix, by key."""
        if not self._ready:
            raise ProviderNotReadyError("the latchkey provider has not loaded its flags yet")
        out = []
        for key, flag_set in sorted(self._index.items()):
            spec = flag_set.document["flags"][key]
            out.append(
                FlagInfo(
                    key=key,
                    flag_set=flag_set.key,
                    state=str(spec.get("state", "ENABLED")),
                    default_variant=spec.get("defaultVariant"),
                    variants=dict(spec.get("variants") or {}),
                    targeting=bool(spec.get("targeting")),
                )
            )
        return out

    @property
    def invalid_sets(self) -> list[str]:
        """Keys under the prefix whose latest value is not a valid flagd document."""
        return sorted(self._broken)


def _load(key: str, text: str) -> _FlagSet:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ParseError(f"not JSON ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("flags"), dict):
        raise ParseError('expected a JSON object with a "flags" object')
    core = FlagdCore()
    try:
        core.set_flags(copy.deepcopy(document))  # flagd-core rewrites what it is given
    except ParseError as exc:
        raise ParseError(exc.error_message or str(exc.__cause__ or "invalid flag")) from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise ParseError(str(exc)) from exc
    return _FlagSet(key=key, document=document, core=core)


def _changed_flags(old: _FlagSet | None, new: _FlagSet) -> set[str]:
    before: Mapping[str, Any] = old.document["flags"] if old is not None else {}
    after: Mapping[str, Any] = new.document["flags"]
    shared = old is not None and old.document.get("$evaluators") == new.document.get("$evaluators")
    return {k for k in set(before) | set(after) if not shared or before.get(k) != after.get(k)}


def _index(sets: Mapping[str, _FlagSet]) -> dict[str, _FlagSet]:
    """Flag key → the set defining it; when two sets define one flag, the first key wins."""
    index: dict[str, _FlagSet] = {}
    for key in sorted(sets):
        for flag in sets[key].document["flags"]:
            if flag in index:
                log.warning(
                    "flag %r is defined in %r and %r; using %r", flag, index[flag].key, key,
                    index[flag].key,
                )  # fmt: skip
                continue
            index[flag] = sets[key]
    return index
