"""The token auth method's paths (``auth/token/...``): create, lookup, renew, revoke."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from latchkey_server.devvault.coerce import (
    get_bool,
    get_comma_list,
    get_duration,
    get_int,
    get_str,
    get_str_map,
    sanitize_policies,
)
from latchkey_server.devvault.errors import BadRequest, VaultError
from latchkey_server.devvault.logical import Backend, Operation, Request, Response
from latchkey_server.devvault.tokens import Token, TokenStore
from latchkey_server.devvault.ttl import MountTTLs, calculate_ttl

if TYPE_CHECKING:
    from latchkey_server.devvault.core import Core

R, U = Operation.READ, Operation.UPDATE


class TokenBackend(Backend):
    type_name = "token"

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core
        self.route(r"create-orphan", {U: self._create})
        self.route(r"create", {U: self._create})
        self.route(r"lookup-self", {R: self._lookup_self, U: self._lookup_self})
        self.route(r"lookup", {U: self._lookup})
        self.route(r"lookup/(?P<token>.+)", {R: self._lookup})
        self.route(r"lookup-accessor", {U: self._lookup_accessor})
        self.route(r"renew-self", {U: self._renew_self})
        self.route(r"renew", {U: self._renew})
        self.route(r"renew/(?P<token>.+)", {U: self._renew})
        self.route(r"renew-accessor", {U: self._renew_accessor})
        self.route(r"revoke-self", {U: self._revoke_self})
        self.route(r"revoke", {U: self._revoke})
        self.route(r"revoke/(?P<token>.+)", {U: self._revoke})
        self.route(r"revoke-accessor", {U: self._revoke_accessor})
        self.route(r"revoke-orphan", {U: self._revoke_orphan})
        self.route(r"accessors/?", {Operation.LIST: self._accessors})

    @property
    def store(self) -> TokenStore:
        return self.core.tokens

    def _ttls(self) -> MountTTLs:
        return self.mount.ttls() if self.mount else MountTTLs()

    # -- create -----------------------------------------------------------------------------
    async def _create(self, req: Request) -> Response | None:
        assert req.token is not None
        token, warnings = self.create(
            req.token, req.data, orphan_path=req.rel == "create-orphan", has_sudo=req.has_sudo
        )
        return Response(auth=token.auth_block(), warnings=warnings)

    def create(
        self,
        caller: Token | None,
        data: dict[str, Any],
        *,
        orphan_path: bool = False,
        has_sudo: bool = True,
    ) -> tuple[Token, list[str]]:
        """Token-create semantics (reference §3.2); ``caller=None`` is the server itself."""
        warnings: list[str] = []
        is_root = caller is None or caller.is_root()
        sudo = is_root or has_sudo
        no_parent = get_bool(data, "no_parent", False)
        if no_parent and not sudo:
            raise BadRequest("root or sudo privileges required to create orphan token")
        custom_id = get_str(data, "id")
        if custom_id and not sudo:
            raise BadRequest("root or sudo privileges required to specify token id")
        if custom_id and self.store.get(custom_id) is not None:
            raise BadRequest("cannot create a token with a duplicate ID")
        period = get_duration(data, "period")
        if period and not sudo:
            raise BadRequest("root or sudo privileges required to create periodic token")
        token_type = get_str(data, "type", "service") or "service"
        if token_type not in ("service", "default"):
            raise BadRequest(f"token type {token_type!r} is not supported by vault-dev")
        num_uses = get_int(data, "num_uses", 0)
        if num_uses < 0:
            raise BadRequest("number of uses cannot be negative")
        explicit_max = get_duration(data, "explicit_max_ttl")
        ttl_req = get_duration(data, "ttl")
        parent_policies = list(caller.policies) if caller else ["root"]
        requested = get_comma_list(data, "policies")
        no_default = get_bool(data, "no_default_policy", False)
        if not requested:
            requested = [p for p in parent_policies if p != "default"]
        elif not sudo:
            wanted = {p.strip().lower() for p in requested} - {"default"}
            if not wanted.issubset(set(parent_policies)):
                raise BadRequest("child policies must be subset of parent")
        add_default = not no_default and (sudo or "default" in parent_policies)
        policies = sanitize_policies(requested, add_default=add_default)
        if "root" in policies and not is_root:
            raise BadRequest("root tokens may not be created without parent token being root")
        for name in policies:
            if name not in ("root", "default") and self.core.policies.get(name) is None:
                warnings.append(f'Policy "{name}" does not exist')
        now = self.core.clock.now()
        if policies == ["root"] and not ttl_req and not period and not explicit_max:
            ttl = 0
        else:
            result = calculate_ttl(
                now=now,
                increment=0,
                backend_ttl=ttl_req,
                period=period,
                backend_max_ttl=0,
                explicit_max_ttl=explicit_max,
                start=now,
                mount=self._ttls(),
            )
            ttl = result.ttl
            warnings.extend(result.warnings)
        orphan = orphan_path or no_parent or caller is None
        token = self.store.new_token(
            token_id=custom_id or None,
            policies=policies,
            path="auth/token/create-orphan" if orphan_path else "auth/token/create",
            display_name=TokenStore.display_name(get_str(data, "display_name")),
            creation_time=now,
            ttl=ttl,
            meta=get_str_map(data, "meta") or None,
            num_uses=num_uses,
            explicit_max_ttl=explicit_max,
            period=period,
            parent="" if orphan else caller.id if caller else "",
            renewable=get_bool(data, "renewable", True),
            expire_time=None if ttl == 0 else now + ttl,
        )
        return token, warnings

    # -- lookup -----------------------------------------------------------------------------
    async def _lookup_self(self, req: Request) -> Response | None:
        assert req.token is not None
        return Response(data=req.token.lookup_data(self.core.clock.now()))

    def _by_body_token(self, req: Request, *, missing: VaultError) -> Token:
        token_id = (req.match.groupdict().get("token") if req.match else None) or get_str(
            req.data, "token"
        )
        if not token_id:
            raise BadRequest("missing token to lookup")
        token = self.store.get(token_id)
        if token is None:
            raise missing
        return token

    async def _lookup(self, req: Request) -> Response | None:
        token = self._by_body_token(req, missing=VaultError(403, ["bad token"]))
        return Response(data=token.lookup_data(self.core.clock.now()))

    async def _lookup_accessor(self, req: Request) -> Response | None:
        token = self.store.get_by_accessor(get_str(req.data, "accessor"))
        if token is None:
            raise BadRequest("invalid accessor")
        return Response(data=token.lookup_data(self.core.clock.now(), include_id=False))

    async def _accessors(self, req: Request) -> Response | None:
        return Response(data={"keys": sorted(t.accessor for t in self.store.all())})

    # -- renew ------------------------------------------------------------------------------
    async def _renew_self(self, req: Request) -> Response | None:
        assert req.token is not None
        return self.renew(req.token, get_duration(req.data, "increment"))

    async def _renew(self, req: Request) -> Response | None:
        token = self._by_body_token(req, missing=BadRequest("token not found"))
        return self.renew(token, get_duration(req.data, "increment"))

    async def _renew_accessor(self, req: Request) -> Response | None:
        token = self.store.get_by_accessor(get_str(req.data, "accessor"))
        if token is None:
            raise BadRequest("invalid accessor")
        return self.renew(token, get_duration(req.data, "increment"))

    def renew(self, token: Token, increment: int) -> Response:
        now = self.core.clock.now()
        if token.expire_time is None or not token.renewable:
            raise BadRequest("lease is not renewable")
        if token.expire_time <= now:
            raise BadRequest("lease expired")
        backend_ttl, backend_max, period = token.ttl, token.max_ttl, token.period
        params = self.core.token_renew_params(token)
        if params is not None:
            backend_ttl, backend_max, period = params
        mount = self.core.mounts.get(token.auth_mount) if token.auth_mount else self.mount
        result = calculate_ttl(
            now=now,
            increment=increment,
            backend_ttl=backend_ttl,
            period=period,
            backend_max_ttl=backend_max,
            explicit_max_ttl=token.explicit_max_ttl,
            start=token.creation_time,
            mount=mount.ttls() if mount else MountTTLs(),
        )
        token.last_renewal = now
        token.expire_time = now + result.ttl
        block = token.auth_block()
        block["lease_duration"] = result.ttl
        return Response(auth=block, warnings=result.warnings)

    # -- revoke -----------------------------------------------------------------------------
    async def _revoke_self(self, req: Request) -> Response | None:
        assert req.token is not None
        await self.store.revoke_tree(req.token.id)
        return None

    async def _revoke(self, req: Request) -> Response | None:
        token_id = (req.match.groupdict().get("token") if req.match else None) or get_str(
            req.data, "token"
        )
        if not token_id:
            raise BadRequest("missing token to revoke")
        await self.store.revoke_tree(token_id)
        return None

    async def _revoke_accessor(self, req: Request) -> Response | None:
        token = self.store.get_by_accessor(get_str(req.data, "accessor"))
        if token is not None:
            await self.store.revoke_tree(token.id)
        return None

    async def _revoke_orphan(self, req: Request) -> Response | None:
        await self.store.revoke_orphan(get_str(req.data, "token"))
        return None
