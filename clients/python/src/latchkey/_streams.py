"""Stream state shared by the sync and async clients (no I/O).

Each view turns the gateway's stream messages into the events callers see, remembers where to
resume after a reconnect, and reports freshness changes (stale / fresh) once per change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from latchkey import _convert
from latchkey._models import (
    ConfigChange,
    ConfigEntry,
    ConfigEvent,
    DatabaseCredentials,
    Freshness,
    RegistrationHealth,
    Secret,
    ServiceEvent,
    StreamStatus,
)
from latchkey.v1 import config_pb2, discovery_pb2, secrets_pb2

log = logging.getLogger("latchkey")


class FreshnessTracker:
    """Emits `stale` / `fresh` once when the gateway's view of its upstream changes."""

    def __init__(self) -> None:
        self.stale = False

    def update(self, freshness: Freshness) -> StreamStatus | None:
        if freshness.stale and not self.stale:
            self.stale = True
            return StreamStatus(
                kind="stale", detail="the gateway serves cached data", freshness=freshness
            )
        if not freshness.stale and self.stale:
            self.stale = False
            return StreamStatus(kind="fresh", detail="the upstream is back", freshness=freshness)
        return None


class ConfigView:
    """The keys under a watched prefix, kept current from snapshots and changes.

    Every snapshot replaces the whole state (keys it lacks are reported deleted); a resume
    sends the last index with the epoch of the snapshot it belongs to, so the gateway can tell
    whether its history really leads from there (else it sends a snapshot flagged `reset`).
    """

    def __init__(self) -> None:
        self.entries: dict[str, ConfigEntry] = {}
        self.index = 0
        self.epoch = ""
        self.freshness = FreshnessTracker()

    @property
    def resume_index(self) -> int:
        return self.index

    @property
    def resume_epoch(self) -> str:
        return self.epoch

    def apply(self, msg: config_pb2.ConfigEvent) -> list[ConfigEvent | StreamStatus]:
        kind = msg.WhichOneof("event")
        out: list[ConfigEvent | StreamStatus] = []
        if kind == "snapshot":
            snap = msg.snapshot
            new = {e.key: _convert.config_entry(e) for e in snap.entries}
            changes = [
                ConfigChange(type="put", key=k, entry=v)
                for k, v in new.items()
                if self.entries.get(k) != v
            ] + [ConfigChange(type="delete", key=k) for k in self.entries if k not in new]
            self.entries = new
            self.index = snap.index
            self.epoch = snap.epoch
            fresh = _convert.freshness(snap)
            out.append(
                ConfigEvent(
                    kind="snapshot",
                    entries=dict(new),
                    changes=changes,
                    index=snap.index,
                    freshness=fresh,
                    reset=snap.reset,
                )
            )
        elif kind == "change":
            change = msg.change
            changes = [_convert.key_change(c) for c in change.changes]
            for c in changes:
                if c.type == "delete":
                    self.entries.pop(c.key, None)
                elif c.entry is not None:
                    self.entries[c.key] = c.entry
            self.index = change.index
            fresh = _convert.freshness(change)
            out.append(
                ConfigEvent(
                    kind="change",
                    entries=dict(self.entries),
                    changes=changes,
                    index=change.index,
                    freshness=fresh,
                )
            )
        else:
            fresh = _convert.freshness(msg.heartbeat)
        status = self.freshness.update(fresh)
        if status is not None:
            out.append(status)
        return out


class ServiceView:
    """The live instance set of a watched service."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.current: ServiceEvent | None = None
        self.freshness = FreshnessTracker()

    def apply(self, msg: discovery_pb2.ServiceEvent) -> list[ServiceEvent | StreamStatus]:
        out: list[ServiceEvent | StreamStatus] = []
        if msg.WhichOneof("event") == "instances":
            s = msg.instances
            fresh = _convert.freshness(s)
            self.current = ServiceEvent(
                service=self.service,
                instances=[_convert.instance(i) for i in s.instances],
                index=s.index,
                freshness=fresh,
            )
            out.append(self.current)
        else:
            fresh = _convert.freshness(msg.heartbeat)
        status = self.freshness.update(fresh)
        if status is not None:
            out.append(status)
        return out


class SecretView:
    """The current version of a watched secret."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.current: Secret | None = None
        self.freshness = FreshnessTracker()

    def apply(self, msg: secrets_pb2.SecretEvent) -> list[Secret | StreamStatus]:
        """A new version (the first one, or one that differs from the current), and freshness
        changes. A version seen again after a reconnect is not reported twice."""
        out: list[Secret | StreamStatus] = []
        if msg.WhichOneof("event") == "version":
            new = _convert.secret(msg.version)
            if self.current is None or new.version != self.current.version:
                out.append(new)
            self.current = new
            fresh = new.freshness
        else:
            fresh = _convert.freshness(msg.heartbeat)
        status = self.freshness.update(fresh)
        if status is not None:
            out.append(status)
        return out


class RegistrationView:
    """A registration's instance id (kept across reconnects, so the gateway registers the same
    instance again) and its latest health."""

    def __init__(self, instance_id: str = "") -> None:
        self.instance_id = instance_id
        self.health: RegistrationHealth | None = None
        self.freshness = FreshnessTracker()

    def apply(self, msg: discovery_pb2.RegisterEvent) -> list[RegistrationHealth | StreamStatus]:
        kind = msg.WhichOneof("event")
        out: list[RegistrationHealth | StreamStatus] = []
        if kind == "registered":
            self.instance_id = msg.registered.instance_id
            return out
        if kind == "health":
            self.health = _convert.registration_health(self.instance_id, msg.health)
            out.append(self.health)
            fresh = self.health.freshness
        else:
            fresh = _convert.freshness(msg.heartbeat)
        status = self.freshness.update(fresh)
        if status is not None:
            out.append(status)
        return out


@dataclass(frozen=True)
class Rotation:
    """A rotation to switch to and acknowledge."""

    credentials: DatabaseCredentials
    watch_id: str
    rotation_id: str
    previous_lease_id: str
    previous_revoke_at: datetime | None


@dataclass
class CredentialView:
    """The credential a watch holds; what a message means for it."""

    role: str
    current: DatabaseCredentials | None = None
    watch_id: str = ""
    revoked: set[str] = field(default_factory=set)

    @property
    def lease_id(self) -> str:
        return self.current.lease_id if self.current is not None else ""

    def apply(
        self, msg: secrets_pb2.CredentialEvent
    ) -> DatabaseCredentials | Rotation | StreamStatus | None:
        """A new credential (issued, possibly a different lease after a reconnect), a rotation
        to acknowledge, a freshness change, or nothing for the caller."""
        self.watch_id = msg.watch_id or self.watch_id
        kind = msg.WhichOneof("event")
        if kind == "issued":
            creds = _convert.credentials(msg.issued.credential)
            self.current = creds
            return creds
        if kind == "rotation":
            rot = msg.rotation
            creds = _convert.credentials(rot.credential)
            self.current = creds
            return Rotation(
                credentials=creds,
                watch_id=msg.watch_id,
                rotation_id=rot.rotation_id,
                previous_lease_id=rot.previous_lease_id,
                previous_revoke_at=_convert._ts(rot, "previous_revoke_at"),
            )
        if kind == "renewed" and self.current is not None:
            if msg.renewed.lease_id == self.current.lease_id:
                expires = _convert._ts(msg.renewed, "lease_expires_at")
                self.current = self.current.model_copy(update={"expires_at": expires})
            return None
        if kind == "revoked":
            self.revoked.add(msg.revoked.lease_id)
            if self.current is not None and msg.revoked.lease_id == self.current.lease_id:
                return StreamStatus(kind="stale", detail="the current lease was revoked")
        return None


M = TypeVar("M", bound=BaseModel)


class ModelBinder(Generic[M]):
    """Keeps a pydantic model in step with the keys under one or more prefixes (layers).

    A key's path below its layer's prefix maps to a field path: `database/host` →
    `database.host` (nested models), with `-` read as `_` in each segment; a field spelled flat
    (`database__host`) still takes `database/host` when the model declares it. Values are decoded
    as JSON when they parse, else used as text, then validated by the field types. Later layers
    override earlier ones key by key. An update that fails validation keeps the last good value
    and goes to `on_error`.
    """

    def __init__(
        self,
        prefixes: Sequence[str],
        model: type[M],
        on_error: Callable[[Exception], None] | None,
    ) -> None:
        self.prefixes = tuple(prefixes)
        self.model = model
        self.on_error = on_error
        self.value: M | None = None
        self.layers: list[dict[str, ConfigEntry]] = [{} for _ in self.prefixes]
        self._attempted: dict[str, Any] | None = None
        self._attempt_failed = False

    @property
    def prefix(self) -> str:
        return ", ".join(self.prefixes)

    def merged(self) -> dict[str, Any]:
        """Relative path → decoded value, later layers winning key by key."""
        return merge_layers(self.prefixes, self.layers)

    def field_values(self) -> dict[str, Any]:
        return nest(self.merged(), self.model)

    def set_layer(self, layer: int, entries: dict[str, ConfigEntry]) -> None:
        self.layers[layer] = dict(entries)

    def update(self) -> M | None:
        """Validate; on success replace the bound instance (returned), else report.

        The same merged input as the last attempt is not validated (or reported) again: a key
        under a later layer's prefix is also under an earlier one's, so one change reaches the
        binder from two watches, and a reconnect's snapshot may repeat what is held."""
        values = self.field_values()
        if values == self._attempted:
            return None if self._attempt_failed else self.value
        self._attempted = values
        self._attempt_failed = True
        try:
            new = self.model.model_validate(values)
        except ValidationError as exc:
            if self.on_error is not None:
                self.on_error(exc)
            else:
                log.warning(
                    "config under %r failed validation; keeping the last good value", self.prefix
                )
            return None
        self._attempt_failed = False
        if self.value is None:
            self.value = new
        else:  # update the live instance the application holds, field by field
            _assign(self.value, new)
        return self.value


def merge_layers(
    prefixes: Sequence[str], layers: Sequence[Mapping[str, ConfigEntry]]
) -> dict[str, Any]:
    """Relative path → decoded value over every layer, later layers winning key by key. A key
    of an earlier layer that lies under a later layer's prefix (`config/myapp/env/production/x`
    under `config/myapp/`) belongs to that later layer only."""
    flat: dict[str, Any] = {}
    for i, (prefix, entries) in enumerate(zip(prefixes, layers, strict=True)):
        later = [_folder(p) for p in prefixes[i + 1 :] if _folder(p) != _folder(prefix)]
        own = {k: e for k, e in entries.items() if not any(k.startswith(p) for p in later)}
        flat.update(relative_values(prefix, own))
    return flat


def _folder(prefix: str) -> str:
    return prefix.rstrip("/") + "/" if prefix else ""


def relative_values(prefix: str, entries: Mapping[str, ConfigEntry]) -> dict[str, Any]:
    """Keys under `prefix` as relative paths (`database/host`), values decoded as JSON or text."""
    values: dict[str, Any] = {}
    base = prefix.rstrip("/") + "/" if prefix else ""
    for key, entry in entries.items():
        name = key[len(base) :] if key.startswith(base) else key
        name = name.strip("/")
        if not name:
            continue
        text = entry.text
        try:
            values[name] = json.loads(text)
        except ValueError:
            values[name] = text
    return values


def nest(flat: Mapping[str, Any], model: type[BaseModel] | None = None) -> dict[str, Any]:
    """`{"database/host": v}` → `{"database": {"host": v}}`; a flat field the model declares
    (`database__host`) takes the whole path instead. A key that is both a value and a folder
    keeps the folder (the value goes under `""`, where validation will name it)."""
    fields = model.model_fields if model is not None else {}
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        segments = [seg.replace("-", "_") for seg in path.split("/")]
        joined = "__".join(segments)
        if len(segments) > 1 and joined in fields:
            tree[joined] = value
            continue
        node = tree
        for seg in segments[:-1]:
            child = node.get(seg)
            if not isinstance(child, dict):
                child = node[seg] = {} if child is None else {"": child}
            node = child
        if isinstance(node.get(segments[-1]), dict):
            node[segments[-1]][""] = value
        else:
            node[segments[-1]] = value
    return tree


def _assign(target: BaseModel, new: BaseModel) -> None:
    """Update `target` in place from `new`, nested models included, so references an app holds
    to a nested part (`settings.database`) follow too."""
    for name, value in new.__dict__.items():
        current = target.__dict__.get(name)
        if isinstance(current, BaseModel) and type(current) is type(value):
            _assign(current, value)
        else:
            target.__dict__[name] = value
