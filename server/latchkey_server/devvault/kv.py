"""KV version 2 secrets engine: versioned data, metadata, soft delete, destroy, cas (§5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from latchkey_server.devvault.clock import rfc3339_nano
from latchkey_server.devvault.coerce import get_bool, get_duration, get_int, get_str_map
from latchkey_server.devvault.errors import BadRequest, VaultError, not_found
from latchkey_server.devvault.logical import Backend, Operation, Request, Response
from latchkey_server.devvault.ttl import format_duration

if TYPE_CHECKING:
    from latchkey_server.devvault.core import Core

R, L, C, U, D = (
    Operation.READ,
    Operation.LIST,
    Operation.CREATE,
    Operation.UPDATE,
    Operation.DELETE,
)
DEFAULT_MAX_VERSIONS = 10
_OP_WORD = {R: "get", L: "list", C: "put", U: "put", D: "delete", Operation.PATCH: "patch"}


@dataclass
class Version:
    created: float
    data: dict[str, Any] | None
    deletion: float | None = None
    destroyed: bool = False

    def meta(self, number: int, custom: dict[str, str] | None) -> dict[str, Any]:
        return {
            "created_time": rfc3339_nano(self.created),
            "custom_metadata": dict(custom) if custom else None,
            "deletion_time": "" if self.deletion is None else rfc3339_nano(self.deletion),
            "destroyed": self.destroyed,
            "version": number,
        }


@dataclass
class Key:
    created: float
    updated: float
    versions: dict[int, Version] = field(default_factory=dict)
    current: int = 0
    oldest: int = 0
    max_versions: int = 0
    cas_required: bool = False
    delete_version_after: int = 0
    custom_metadata: dict[str, str] | None = None


class KVBackend(Backend):
    type_name = "kv"

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core
        self.keys: dict[str, Key] = {}
        self.max_versions = 0
        self.cas_required = False
        self.delete_version_after = 0
        self.route(r"config", {R: self._read_config, U: self._write_config})
        self.route(
            r"data/(?P<p>.*[^/])",
            {R: self._read, C: self._write, U: self._write, D: self._delete_latest},
            exists=self._data_exists,
        )
        self.route(r"delete/(?P<p>.*[^/])", {U: self._delete_versions})
        self.route(r"undelete/(?P<p>.*[^/])", {U: self._undelete})
        self.route(r"destroy/(?P<p>.*[^/])", {U: self._destroy})
        self.route(r"metadata/?", {L: self._list})
        self.route(
            r"metadata/(?P<p>.+)",
            {
                R: self._read_meta,
                C: self._write_meta,
                U: self._write_meta,
                D: self._delete_meta,
                L: self._list,
            },
        )

    def _now(self) -> float:
        return self.core.clock.now()

    @staticmethod
    def _p(req: Request) -> str:
        return req.match.group("p") if req.match is not None else ""

    async def unsupported_path(self, req: Request) -> Response | None:
        word = _OP_WORD.get(req.operation, "get")
        warning = (
            "Invalid path for a versioned K/V secrets engine. See the API docs for the "
            "appropriate API endpoints to use. If using the Vault CLI, use "
            f"'vault kv {word}' for this operation."
        )
        return Response(warnings=[warning], status=404)

    # -- config -----------------------------------------------------------------------------
    async def _read_config(self, req: Request) -> Response | None:
        return Response(
            data={
                "cas_required": self.cas_required,
                "delete_version_after": format_duration(self.delete_version_after),
                "max_versions": self.max_versions,
            }
        )

    async def _write_config(self, req: Request) -> Response | None:
        self.max_versions = get_int(req.data, "max_versions", self.max_versions)
        self.cas_required = get_bool(req.data, "cas_required", self.cas_required)
        self.delete_version_after = get_duration(
            req.data, "delete_version_after", self.delete_version_after
        )
        return None

    # -- data -------------------------------------------------------------------------------
    async def _data_exists(self, req: Request) -> bool:
        return self._p(req) in self.keys

    def _version_number(self, req: Request, key: Key) -> int:
        number = get_int(req.data, "version", 0)
        return number or key.current

    async def _read(self, req: Request) -> Response | None:
        key = self.keys.get(self._p(req))
        if key is None:
            return None
        number = self._version_number(req, key)
        version = key.versions.get(number)
        if version is None:
            return None
        meta = version.meta(number, key.custom_metadata)
        if version.destroyed or (version.deletion is not None and version.deletion <= self._now()):
            return Response(data={"data": None, "metadata": meta}, status=404)
        return Response(data={"data": dict(version.data or {}), "metadata": meta})

    async def _write(self, req: Request) -> Response | None:
        path = self._p(req)
        payload = req.data.get("data")
        if payload is None:
            raise BadRequest("no data provided")
        if not isinstance(payload, dict):
            raise BadRequest("data must be a JSON object")
        options = req.data.get("options") or {}
        if not isinstance(options, dict):
            raise BadRequest("options must be a JSON object")
        key = self.keys.get(path)
        cas_required = self.cas_required or (key is not None and key.cas_required)
        if options.get("cas") is not None:
            cas = get_int(options, "cas", 0)
            if cas != (key.current if key else 0):
                raise BadRequest("check-and-set parameter did not match the current version")
        elif cas_required:
            raise BadRequest("check-and-set parameter required for this call")
        now = self._now()
        if key is None:
            key = Key(created=now, updated=now)
            self.keys[path] = key
        key.current += 1
        key.updated = now
        key.versions[key.current] = Version(created=now, data=dict(payload))
        self._prune(key)
        return Response(data=key.versions[key.current].meta(key.current, key.custom_metadata))

    def _prune(self, key: Key) -> None:
        limit = key.max_versions or self.max_versions or DEFAULT_MAX_VERSIONS
        for number in sorted(key.versions):
            if number <= key.current - limit:
                del key.versions[number]
        if key.versions and key.current > limit:
            key.oldest = min(key.versions)

    async def _delete_latest(self, req: Request) -> Response | None:
        key = self.keys.get(self._p(req))
        if key is None:
            return None
        version = key.versions.get(key.current)
        if version is not None and version.deletion is None and not version.destroyed:
            version.deletion = self._now()
        return None

    def _versions_arg(self, req: Request) -> list[int]:
        raw = req.data.get("versions")
        if raw is None:
            raise BadRequest("no version number provided")
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items:
            raise BadRequest("no version number provided")
        try:
            return [int(v) for v in items]
        except (TypeError, ValueError) as exc:
            raise BadRequest("version numbers must be integers") from exc

    async def _delete_versions(self, req: Request) -> Response | None:
        numbers = self._versions_arg(req)
        key = self.keys.get(self._p(req))
        if key is not None:
            now = self._now()
            for number in numbers:
                version = key.versions.get(number)
                if version is not None and version.deletion is None and not version.destroyed:
                    version.deletion = now
        return None

    async def _undelete(self, req: Request) -> Response | None:
        numbers = self._versions_arg(req)
        key = self.keys.get(self._p(req))
        if key is not None:
            for number in numbers:
                version = key.versions.get(number)
                if version is not None and not version.destroyed:
                    version.deletion = None
        return None

    async def _destroy(self, req: Request) -> Response | None:
        numbers = self._versions_arg(req)
        key = self.keys.get(self._p(req))
        if key is not None:
            for number in numbers:
                version = key.versions.get(number)
                if version is not None:
                    version.destroyed = True
                    version.data = None
        return None

    # -- metadata ---------------------------------------------------------------------------
    async def _read_meta(self, req: Request) -> Response | None:
        key = self.keys.get(self._p(req))
        if key is None:
            return None
        versions = {
            str(n): {
                "created_time": rfc3339_nano(v.created),
                "deletion_time": "" if v.deletion is None else rfc3339_nano(v.deletion),
                "destroyed": v.destroyed,
            }
            for n, v in sorted(key.versions.items())
        }
        return Response(
            data={
                "cas_required": key.cas_required,
                "created_time": rfc3339_nano(key.created),
                "current_version": key.current,
                "custom_metadata": dict(key.custom_metadata) if key.custom_metadata else None,
                "delete_version_after": format_duration(key.delete_version_after),
                "max_versions": key.max_versions,
                "oldest_version": key.oldest,
                "updated_time": rfc3339_nano(key.updated),
                "versions": versions,
            }
        )

    async def _write_meta(self, req: Request) -> Response | None:
        path = self._p(req)
        if path.endswith("/"):
            raise VaultError(404, [])
        now = self._now()
        key = self.keys.get(path)
        if key is None:
            key = Key(created=now, updated=now)
            self.keys[path] = key
        key.max_versions = get_int(req.data, "max_versions", key.max_versions)
        key.cas_required = get_bool(req.data, "cas_required", key.cas_required)
        key.delete_version_after = get_duration(
            req.data, "delete_version_after", key.delete_version_after
        )
        custom = get_str_map(req.data, "custom_metadata")
        if custom is not None:
            if len(custom) > 64:
                raise BadRequest("custom_metadata may not contain more than 64 keys")
            key.custom_metadata = custom or None
        key.updated = now
        self._prune(key)
        return None

    async def _delete_meta(self, req: Request) -> Response | None:
        self.keys.pop(self._p(req), None)
        return None

    async def _list(self, req: Request) -> Response | None:
        prefix = self._p(req) if req.match is not None and req.match.groupdict().get("p") else ""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        found: set[str] = set()
        for path in self.keys:
            if path.startswith(prefix):
                head, sep, _ = path[len(prefix) :].partition("/")
                found.add(head + sep)
        if not found:
            raise not_found()
        return Response(data={"keys": sorted(found)})
