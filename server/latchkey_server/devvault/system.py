"""The ``sys/`` backend: mounts, auth methods, policies, leases, capabilities, health bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from latchkey_server.devvault import ids
from latchkey_server.devvault.coerce import get_bool, get_comma_list, get_duration, get_str
from latchkey_server.devvault.errors import BadRequest, not_found
from latchkey_server.devvault.logical import Backend, Mount, Operation, Request, Response

if TYPE_CHECKING:
    from latchkey_server.devvault.core import Core

VERSION = "1.17.0"
BUILD_DATE = "2024-06-10T00:00:00Z"
R, L, U, D = Operation.READ, Operation.LIST, Operation.UPDATE, Operation.DELETE

BackendFactory = Callable[["Core"], Backend]


def _engine_factories() -> dict[str, BackendFactory]:
    from latchkey_server.devvault.database import DatabaseBackend
    from latchkey_server.devvault.kv import KVBackend

    return {"kv": KVBackend, "database": DatabaseBackend}


def _auth_factories() -> dict[str, BackendFactory]:
    from latchkey_server.devvault.approle import AppRoleBackend

    return {"approle": AppRoleBackend}


def mount_info(mount: Mount) -> dict[str, Any]:
    config: dict[str, Any] = {
        "default_lease_ttl": mount.default_lease_ttl,
        "max_lease_ttl": mount.max_lease_ttl,
        "force_no_cache": False,
    }
    if mount.is_auth:
        config["token_type"] = "default-service"
    return {
        "accessor": mount.accessor,
        "config": config,
        "description": mount.description,
        "external_entropy_access": False,
        "local": mount.local,
        "options": dict(mount.options) if mount.options is not None else None,
        "plugin_version": "",
        "running_plugin_version": f"v{VERSION}+builtin.vault",
        "running_sha256": "",
        "seal_wrap": mount.seal_wrap,
        "type": mount.type,
        "uuid": mount.uuid,
    }


def health_body(core: Core) -> dict[str, Any]:
    return {
        "initialized": True,
        "sealed": False,
        "standby": False,
        "performance_standby": False,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": int(core.clock.now()),
        "version": VERSION,
        "enterprise": False,
        "cluster_name": core.cluster_name,
        "cluster_id": core.cluster_id,
    }


def seal_status_body(core: Core) -> dict[str, Any]:
    return {
        "type": "shamir",
        "initialized": True,
        "sealed": False,
        "t": 1,
        "n": 1,
        "progress": 0,
        "nonce": "",
        "version": VERSION,
        "build_date": BUILD_DATE,
        "migration": False,
        "cluster_name": core.cluster_name,
        "cluster_id": core.cluster_id,
        "recovery_seal": False,
        "storage_type": "inmem",
    }


LEADER_BODY: dict[str, Any] = {
    "ha_enabled": False,
    "is_self": False,
    "active_time": "0001-01-01T00:00:00Z",
    "leader_address": "",
    "leader_cluster_address": "",
    "performance_standby": False,
    "performance_standby_last_remote_wal": 0,
}


class SystemBackend(Backend):
    type_name = "system"

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core
        self._tasks: set[asyncio.Task[None]] = set()
        self.route(r"mounts", {R: self._list_mounts})
        self.route(r"mounts/(?P<path>.+?)/tune", {R: self._read_tune, U: self._write_tune})
        self.route(r"mounts/(?P<path>.+)", {R: self._read_mount, U: self._enable, D: self._disable})
        self.route(r"auth", {R: self._list_auth})
        self.route(
            r"auth/(?P<path>.+)", {R: self._read_auth, U: self._enable_auth, D: self._disable_auth}
        )
        self.route(r"policies/acl/?", {L: self._list_acl})
        self.route(
            r"policies/acl/(?P<name>.+)",
            {R: self._read_acl, U: self._write_acl, D: self._delete_policy},
        )
        self.route(r"policy/?", {R: self._list_legacy, L: self._list_legacy})
        self.route(
            r"policy/(?P<name>.+)",
            {R: self._read_legacy, U: self._write_legacy, D: self._delete_policy},
        )
        self.route(r"leases/lookup", {U: self._lease_lookup})
        self.route(r"leases/lookup/(?P<prefix>.*)", {L: self._lease_list})
        self.route(r"(?:leases/)?renew(?:/(?P<lease>.+))?", {U: self._lease_renew})
        self.route(r"(?:leases/)?revoke(?:/(?P<lease>.+))?", {U: self._lease_revoke})
        self.route(r"(?:leases/)?revoke-prefix/(?P<prefix>.+)", {U: self._revoke_prefix})
        self.route(r"(?:leases/)?revoke-force/(?P<prefix>.+)", {U: self._revoke_force})
        self.route(r"capabilities-self", {U: self._capabilities_self})
        self.route(r"capabilities", {U: self._capabilities})

    def _g(self, req: Request, name: str) -> str:
        assert req.match is not None
        return req.match.group(name) or ""

    # -- mounts -----------------------------------------------------------------------------
    async def _list_mounts(self, req: Request) -> Response | None:
        data = {p: mount_info(m) for p, m in sorted(self.core.mounts.items()) if not m.is_auth}
        return Response(data=data, inject_top_level=True)

    async def _read_mount(self, req: Request) -> Response | None:
        mount = self.core.mounts.get(self._g(req, "path").strip("/") + "/")
        if mount is None or mount.is_auth:
            raise BadRequest(f"No secret engine mount at {self._g(req, 'path').strip('/')}/")
        return Response(data=mount_info(mount), inject_top_level=True)

    async def _read_tune(self, req: Request) -> Response | None:
        mount = self.core.mounts.get(self._g(req, "path").strip("/") + "/")
        if mount is None:
            raise BadRequest(f"cannot fetch sysview for path {self._g(req, 'path')!r}")
        ttls = mount.ttls()
        data: dict[str, Any] = {
            "default_lease_ttl": ttls.default_ttl,
            "max_lease_ttl": ttls.max_ttl,
            "force_no_cache": False,
            "description": mount.description,
        }
        if mount.options is not None:
            data["options"] = dict(mount.options)
        return Response(data=data)

    async def _write_tune(self, req: Request) -> Response | None:
        mount = self.core.mounts.get(self._g(req, "path").strip("/") + "/")
        if mount is None:
            raise BadRequest(f"cannot tune {self._g(req, 'path')!r}: no mount")
        self._apply_ttl_config(mount, req.data)
        if req.data.get("description") is not None:
            mount.description = get_str(req.data, "description")
        return None

    @staticmethod
    def _apply_ttl_config(mount: Mount, config: dict[str, Any]) -> None:
        default = get_duration(config, "default_lease_ttl", mount.default_lease_ttl)
        maximum = get_duration(config, "max_lease_ttl", mount.max_lease_ttl)
        if default and maximum and default > maximum:
            raise BadRequest("given default lease TTL greater than given max lease TTL")
        mount.default_lease_ttl, mount.max_lease_ttl = default, maximum

    async def _enable(self, req: Request) -> Response | None:
        path = self._g(req, "path").strip("/") + "/"
        kind = get_str(req.data, "type")
        if not kind:
            raise BadRequest("backend type must be specified as a string")
        options = {str(k): str(v) for k, v in (req.data.get("options") or {}).items()}
        if kind == "kv-v2":
            kind = "kv"
            options["version"] = "2"
        factories = _engine_factories()
        if kind not in factories:
            raise BadRequest(f"plugin not found in the catalog: {kind}")
        if kind == "kv":
            options["version"] = options.get("version") or "2"
            if options["version"] != "2":
                raise BadRequest("vault-dev supports only version 2 of the kv secrets engine")
        elif "version" in options:
            raise BadRequest("version is not supported for this backend type")
        if path.startswith(("sys/", "auth/", "cubbyhole/", "identity/")):
            raise BadRequest(f'cannot mount "{path}"')
        conflict = self.core.conflicting_mount(path)
        if conflict is not None:
            raise BadRequest(f"path is already in use at {conflict}")
        mount = Mount(
            path=path,
            type=kind,
            backend=factories[kind](self.core),
            accessor=f"{kind}_{ids.hex8()}",
            uuid=ids.new_uuid(),
            description=get_str(req.data, "description"),
            options=options or None,
            local=get_bool(req.data, "local", False),
            seal_wrap=get_bool(req.data, "seal_wrap", False),
        )
        self._apply_ttl_config(mount, req.data.get("config") or {})
        self.core.add_mount(mount)
        return None

    async def _disable(self, req: Request) -> Response | None:
        path = self._g(req, "path").strip("/") + "/"
        if path.startswith(("sys/", "cubbyhole/", "identity/", "auth/")):
            raise BadRequest(f'cannot unmount "{path}"')
        mount = self.core.mounts.get(path)
        if mount is not None and not mount.is_auth:
            await self.core.remove_mount(path)
        return None

    # -- auth methods -----------------------------------------------------------------------
    async def _list_auth(self, req: Request) -> Response | None:
        data = {
            p[len("auth/") :]: mount_info(m)
            for p, m in sorted(self.core.mounts.items())
            if m.is_auth
        }
        return Response(data=data, inject_top_level=True)

    async def _read_auth(self, req: Request) -> Response | None:
        mount = self.core.mounts.get("auth/" + self._g(req, "path").strip("/") + "/")
        if mount is None:
            raise BadRequest(f"No auth engine at {self._g(req, 'path').strip('/')}/")
        return Response(data=mount_info(mount), inject_top_level=True)

    async def _enable_auth(self, req: Request) -> Response | None:
        rel = self._g(req, "path").strip("/")
        if rel.endswith("/tune"):
            return None
        path = "auth/" + rel + "/"
        kind = get_str(req.data, "type")
        if not kind:
            raise BadRequest("backend type must be specified as a string")
        if kind == "token":
            raise BadRequest("token credential backend cannot be instantiated")
        factories = _auth_factories()
        if kind not in factories:
            raise BadRequest(f"plugin not found in the catalog: {kind}")
        conflict = self.core.conflicting_mount(path)
        if conflict is not None:
            raise BadRequest(f"path is already in use at {conflict}")
        mount = Mount(
            path=path,
            type=kind,
            backend=factories[kind](self.core),
            accessor=f"auth_{kind}_{ids.hex8()}",
            uuid=ids.new_uuid(),
            description=get_str(req.data, "description"),
            local=get_bool(req.data, "local", False),
            seal_wrap=get_bool(req.data, "seal_wrap", False),
            is_auth=True,
        )
        self._apply_ttl_config(mount, req.data.get("config") or {})
        self.core.add_mount(mount)
        return None

    async def _disable_auth(self, req: Request) -> Response | None:
        path = "auth/" + self._g(req, "path").strip("/") + "/"
        if path == "auth/token/":
            raise BadRequest('cannot unmount "auth/token/"')
        await self.core.remove_mount(path)
        return None

    # -- policies ---------------------------------------------------------------------------
    async def _list_acl(self, req: Request) -> Response | None:
        return Response(data={"keys": self.core.policies.names()})

    async def _list_legacy(self, req: Request) -> Response | None:
        names = self.core.policies.names()
        return Response(data={"keys": names, "policies": names}, inject_top_level=True)

    def _policy_text(self, name: str) -> str | None:
        if name == "root":
            return ""
        policy = self.core.policies.get(name)
        return policy.raw if policy is not None else None

    async def _read_acl(self, req: Request) -> Response | None:
        name = self._g(req, "name").lower()
        text = self._policy_text(name)
        if text is None:
            raise not_found()
        return Response(data={"name": name, "policy": text})

    async def _read_legacy(self, req: Request) -> Response | None:
        name = self._g(req, "name").lower()
        text = self._policy_text(name)
        if text is None:
            raise not_found()
        return Response(data={"name": name, "rules": text}, inject_top_level=True)

    async def _write_acl(self, req: Request) -> Response | None:
        return self._write_policy(req, get_str(req.data, "policy"))

    async def _write_legacy(self, req: Request) -> Response | None:
        text = get_str(req.data, "policy")
        warnings = []
        if not text and req.data.get("rules") is not None:
            text = get_str(req.data, "rules")
            warnings.append("'rules' is deprecated, please use 'policy' instead")
        response = self._write_policy(req, text)
        if warnings:
            response = response or Response()
            response.warnings.extend(warnings)
        return response

    def _write_policy(self, req: Request, text: str) -> Response | None:
        raw_name = self._g(req, "name")
        name = raw_name.lower()
        self.core.policies.put(name, text)
        if name != raw_name:
            return Response(warnings=[f"policy name was converted to {name}"])
        return None

    async def _delete_policy(self, req: Request) -> Response | None:
        self.core.policies.delete(self._g(req, "name").lower())
        return None

    # -- leases -----------------------------------------------------------------------------
    def _lease_id(self, req: Request) -> str:
        lease_id = get_str(req.data, "lease_id") or get_str(req.data, "url_lease_id")
        if not lease_id and req.match is not None:
            lease_id = req.match.groupdict().get("lease") or ""
        if not lease_id:
            raise BadRequest("lease_id must be specified")
        return lease_id

    async def _lease_lookup(self, req: Request) -> Response | None:
        lease = self.core.leases.get(self._lease_id(req))
        if lease is None:
            raise BadRequest("invalid lease")
        return Response(data=lease.lookup_data(self.core.clock.now()))

    async def _lease_list(self, req: Request) -> Response | None:
        prefix = self._g(req, "prefix")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return Response(data={"keys": self.core.leases.list_prefix(prefix)})

    async def _lease_renew(self, req: Request) -> Response | None:
        lease_id = self._lease_id(req)
        if lease_id.startswith("auth/"):
            raise BadRequest("tokens cannot be renewed through this endpoint")
        lease, result = await self.core.leases.renew(lease_id, get_duration(req.data, "increment"))
        return Response(
            lease_id=lease.id,
            renewable=lease.renewable,
            lease_duration=result.ttl,
            warnings=list(result.warnings),
            status=200,
        )

    async def _lease_revoke(self, req: Request) -> Response | None:
        lease_id = self._lease_id(req)
        if get_bool(req.data, "sync", True):
            await self.core.leases.revoke(lease_id)
            return None
        self._background(self.core.leases.revoke(lease_id))
        return Response(status=202)

    def _background(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _revoke_by_prefix(self, prefix: str, *, force: bool) -> None:
        await self.core.leases.revoke_prefix(prefix, force=force)
        for token in self.core.tokens.all():
            if token.path.startswith(prefix):
                await self.core.tokens.revoke_tree(token.id)

    async def _revoke_prefix(self, req: Request) -> Response | None:
        prefix = self._g(req, "prefix")
        if get_bool(req.data, "sync", True):
            await self._revoke_by_prefix(prefix, force=False)
            return None
        self._background(self._revoke_by_prefix(prefix, force=False))
        return Response(status=202)

    async def _revoke_force(self, req: Request) -> Response | None:
        await self._revoke_by_prefix(self._g(req, "prefix"), force=True)
        return None

    # -- capabilities -----------------------------------------------------------------------
    def _caps(self, names: list[str], paths: list[str]) -> dict[str, Any]:
        acl = self.core.policies.acl_for(names)
        data: dict[str, Any] = {}
        for path in paths:
            caps = ["root"] if acl.root else sorted(acl.capabilities(path))
            data[path] = caps
        if len(paths) == 1:
            data["capabilities"] = data[paths[0]]
        return data

    async def _capabilities_self(self, req: Request) -> Response | None:
        assert req.token is not None
        paths = get_comma_list(req.data, "paths") or get_comma_list(req.data, "path") or []
        if not paths:
            raise BadRequest("missing paths")
        return Response(data=self._caps(req.token.policies, paths))

    async def _capabilities(self, req: Request) -> Response | None:
        token = self.core.tokens.get(get_str(req.data, "token"))
        if token is None:
            raise BadRequest("invalid token")
        paths = get_comma_list(req.data, "paths") or get_comma_list(req.data, "path") or []
        return Response(data=self._caps(token.policies, paths))
