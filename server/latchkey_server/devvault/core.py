"""The request pipeline: token check, routing, existence check, ACL, dispatch, leases."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from latchkey_server.devvault import ids
from latchkey_server.devvault.clock import Clock, WallClock
from latchkey_server.devvault.errors import (
    BadRequest,
    VaultError,
    invalid_token,
    missing_token,
    no_handler,
    not_found,
    permission_denied,
)
from latchkey_server.devvault.leases import LeaseManager, Reaper
from latchkey_server.devvault.logical import WRITE_OPS, Backend, Mount, Operation, Request, Response
from latchkey_server.devvault.policy import ACL, PolicyStore
from latchkey_server.devvault.tokens import Token, TokenStore

log = logging.getLogger(__name__)

RESERVED_MOUNTS = ("sys/", "auth/", "cubbyhole/", "identity/")


@dataclass
class Outcome:
    """What the HTTP layer renders: a response (or None → 204) and the serving mount's type."""

    response: Response | None
    mount_type: str
    operation: Operation


class Core:
    """In-memory Vault: mounts, tokens, policies and leases, all on one event loop."""

    def __init__(self, clock: Clock | None = None, reap_interval: float = 1.0) -> None:
        self.clock: Clock = clock or WallClock()
        self.tokens = TokenStore(self.clock)
        self.policies = PolicyStore()
        self.mounts: dict[str, Mount] = {}
        self.leases = LeaseManager(self.clock, self._backend_at)
        self.tokens.on_revoke = self._revoke_token_leases
        self.cluster_id = ids.new_uuid()
        self.cluster_name = f"vault-cluster-{ids.hex8()}"
        self._reaper = Reaper(reap_interval, self.reap)

    # -- mounts ---------------------------------------------------------------------------
    def _backend_at(self, mount_path: str) -> Backend | None:
        mount = self.mounts.get(mount_path)
        return mount.backend if mount else None

    def add_mount(self, mount: Mount) -> None:
        mount.backend.mount = mount
        self.mounts[mount.path] = mount

    def find_mount(self, path: str) -> Mount | None:
        best: Mount | None = None
        probe = path if path.endswith("/") else path + "/"
        for mount_path, mount in self.mounts.items():
            if probe.startswith(mount_path) and (best is None or len(mount_path) > len(best.path)):
                best = mount
        return best

    def conflicting_mount(self, path: str) -> str | None:
        for existing in self.mounts:
            if existing.startswith(path) or path.startswith(existing):
                return existing
        return None

    async def remove_mount(self, path: str) -> None:
        mount = self.mounts.get(path)
        if mount is None:
            return
        await self.leases.revoke_prefix(path, force=True)
        if mount.is_auth:
            for token in self.tokens.all():
                if token.path.startswith(path):
                    await self.tokens.revoke_tree(token.id)
        await mount.backend.close()
        self.mounts.pop(path, None)

    # -- tokens ---------------------------------------------------------------------------
    def acl(self, token: Token) -> ACL:
        return self.policies.acl_for(token.policies)

    async def _revoke_token_leases(self, token: Token) -> None:
        await self.leases.revoke_by_token(token.id)

    def token_renew_params(self, token: Token) -> tuple[int, int, int] | None:
        mount = self.mounts.get(token.auth_mount) if token.auth_mount else None
        return mount.backend.token_params(token.role_name) if mount else None

    async def revoke_token(self, token_id: str) -> None:
        await self.tokens.revoke_tree(token_id)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._reaper.start()

    async def reap(self) -> None:
        for token in self.tokens.expired():
            await self.tokens.revoke_tree(token.id)
        await self.leases.reap()

    async def shutdown(self) -> None:
        """Stop the reaper and revoke every outstanding lease (dropping database users)."""
        await self._reaper.stop()
        await self.leases.revoke_all()
        for mount in list(self.mounts.values()):
            await mount.backend.close()

    # -- requests -------------------------------------------------------------------------
    async def handle(
        self, operation: Operation, path: str, data: dict[str, Any], token_id: str | None
    ) -> Outcome:
        mount = self.find_mount(path)
        token: Token | None = None
        if not self._unauthenticated(path, mount):
            if not token_id:
                raise missing_token()
            token = self.tokens.get(token_id)
            if token is None:
                raise invalid_token()
        if mount is None:
            is_list = operation is Operation.LIST
            if token is not None and not self.acl(token).allows(
                path, operation.value, is_list=is_list
            ):
                raise permission_denied()
            raise no_handler(path)
        rel = path[len(mount.path) :] if len(path) >= len(mount.path) else ""
        req = Request(operation=operation, path=path, rel=rel, data=data, token=token, mount=mount)
        if operation in WRITE_OPS:
            exists = await mount.backend.exists(req)
            if exists is not None:
                req.operation = Operation.UPDATE if exists else Operation.CREATE
        if token is not None:
            acl = self.acl(token)
            is_list = req.operation is Operation.LIST
            if not acl.allows(path, req.operation.value, is_list=is_list):
                raise permission_denied()
            req.is_root = acl.root
            req.has_sudo = acl.root or "sudo" in acl.capabilities(path, is_list=is_list)
        used_up = token is not None and self.tokens.use(token)
        try:
            response = await mount.backend.handle(req)
            if response is not None and response.secret is not None:
                response = self._register_lease(req, response)
        except BaseException:
            if used_up and token is not None:
                await self.tokens.revoke_tree(token.id)
            raise
        if used_up and token is not None:
            await self.tokens.revoke_tree(token.id)
        self._check_empty(req.operation, response)
        return Outcome(response=response, mount_type=mount.type, operation=req.operation)

    def _unauthenticated(self, path: str, mount: Mount | None) -> bool:
        if path in ("sys/health", "sys/seal-status", "sys/init", "sys/leader"):
            return True
        return bool(mount is not None and mount.type == "approle" and path == mount.path + "login")

    def _register_lease(self, req: Request, response: Response) -> Response:
        secret = response.secret
        assert secret is not None
        assert req.token is not None
        lease = self.leases.register(
            path=req.path,
            mount_path=req.mount.path,
            mount_type=req.mount.type,
            ttl=secret.ttl,
            renewable=secret.renewable,
            internal=secret.internal,
            client_token=req.token.id,
        )
        response.lease_id = lease.id
        response.renewable = secret.renewable
        response.lease_duration = secret.ttl
        response.secret = None
        return response

    @staticmethod
    def _check_empty(operation: Operation, response: Response | None) -> None:
        if response is not None and response.status is not None:
            return
        if operation is Operation.READ and response is None:
            raise not_found()
        if operation is Operation.LIST:
            keys = (response.data or {}).get("keys") if response is not None else None
            if not keys:
                raise not_found()


def require(data: dict[str, Any], key: str, message: str) -> str:
    value = data.get(key)
    if value is None or value == "":
        raise BadRequest(message)
    return str(value)


__all__ = ["Core", "Outcome", "VaultError", "require"]
