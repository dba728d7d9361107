"""The Vault adapter: the only module that imports hvac.

hvac is synchronous, so every call runs on a bounded thread pool (`pool_size` threads) via
`loop.run_in_executor`; nothing blocking reaches the event loop. hvac and requests exceptions
are turned into domain errors right where the call is made, through one table (`_RULES` here,
the hvac-free rest in `_vault_errors.py`): the exception's class, refined by the words of
Vault's own `errors` list, gives a cause; the cause gives the domain error and whether the call
may be retried. Transient failures are retried with exponential backoff and full jitter.

Tokens. The adapter authenticates with a given token (renewed while renewable) or logs in
(AppRole, userpass or JWT: log in, renew at `token_renew_fraction` of the TTL, log in again when
renewal stops extending the token). Vault makes every lease a child of the token that created
it and revokes the lease the moment that token dies. So the adapter remembers which token issued
each lease, renews and revokes a lease with that token's own client, keeps every token that
still owns a live lease alive, and revokes an old token only once its leases are gone. When an
old token cannot be kept alive to its leases' end (it reached its max TTL), the listeners
registered with `add_token_deadline_listener` are told which leases will die and when, so the
lease broker can rotate them first.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import hvac
import hvac.exceptions as hvac_exc
import requests

from latchkey_server import backoff
from latchkey_server.errors import LatchkeyError, NotFound, PermissionDenied, Unavailable
from latchkey_server.models import KvSecret
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.observability.tracing import child_span
from latchkey_server.upstreams._vault_config import (
    AppRoleAuth,
    FileSecret,
    JwtAuth,
    LoginAuth,
    TokenAuth,
    UserpassAuth,
    VaultAdapterConfig,
    VaultAuth,
    config_from_settings,
    reveal,
)
from latchkey_server.upstreams._vault_errors import (
    OUTCOMES,
    Cause,
    Retry,
    Rule,
    classify,
    domain_error,
    operation,
    vault_messages,
)
from latchkey_server.upstreams._vault_responses import (
    kv_current_version,
    kv_secret,
    response_warnings,
)
from latchkey_server.upstreams._vault_tokens import TokenKeeper, TokenRecord
from latchkey_server.upstreams.vault_port import (
    VAULT_SYSTEM_MAX_TTL,
    IssuedLease,
    RenewedLease,
    StateListener,
)

if TYPE_CHECKING:
    from latchkey_server.config import VaultSettings

log = logging.getLogger("latchkey.upstreams.vault")

__all__ = [
    "AppRoleAuth",
    "Cause",
    "ClientFactory",
    "FileSecret",
    "JwtAuth",
    "TokenAuth",
    "UserpassAuth",
    "VaultAdapter",
    "VaultAdapterConfig",
    "VaultAuth",
    "translate_error",
    "vault_messages",
]

T = TypeVar("T")
ClientFactory = Callable[[str | None], Any]
"""Builds an hvac.Client-like object for a token (None: unauthenticated, for logging in)."""


# ---------------------------------------------------------------- error translation

# hvac's exception classes (one per HTTP status) and requests' transport errors, refined by
# Vault's own words: the first matching row gives the cause (see `_vault_errors.OUTCOMES`).
_REFUSED = (hvac_exc.InvalidRequest, hvac_exc.Unauthorized, hvac_exc.Forbidden)
_RULES: tuple[Rule, ...] = (
    Rule(hvac_exc.VaultDown, Cause.SEALED, says="vault is sealed"),
    Rule(_REFUSED, Cause.LOGIN_REFUSED, op="login"),
    Rule(hvac_exc.InvalidRequest, Cause.UNKNOWN_ROLE, says="unknown role"),
    Rule(hvac_exc.InvalidRequest, Cause.LEASE_GONE, says="lease not found"),
    Rule(hvac_exc.InvalidRequest, Cause.LEASE_GONE, says="invalid lease"),
    Rule(hvac_exc.InvalidRequest, Cause.LEASE_GONE, says="lease expired"),
    Rule(hvac_exc.InvalidRequest, Cause.LEASE_GONE, says="lease is expired"),
    Rule(hvac_exc.InvalidRequest, Cause.NOT_RENEWABLE, says="not renewable"),
    Rule(hvac_exc.InvalidRequest, Cause.NOT_RENEWABLE, says="past the max ttl"),
    Rule(hvac_exc.InvalidPath, Cause.MISSING),
    Rule((hvac_exc.Forbidden, hvac_exc.Unauthorized), Cause.DENIED),
    Rule(hvac_exc.InvalidRequest, Cause.BAD_REQUEST),
    Rule(hvac_exc.RateLimitExceeded, Cause.RATE_LIMITED),
    Rule(hvac_exc.VaultNotInitialized, Cause.UNINITIALIZED),
    Rule(hvac_exc.VaultDown, Cause.DOWN),
    Rule((hvac_exc.InternalServerError, hvac_exc.BadGateway), Cause.SERVER_ERROR),
    Rule(requests.exceptions.ConnectTimeout, Cause.CONNECT_TIMEOUT),
    Rule(requests.exceptions.Timeout, Cause.TIMEOUT),
    Rule(requests.exceptions.ConnectionError, Cause.UNREACHABLE),
    Rule(hvac_exc.VaultError, Cause.UNEXPECTED),
)


def translate(
    exc: BaseException, action: str, messages: Mapping[Cause, str] | None = None
) -> tuple[Cause | None, LatchkeyError]:
    """The cause (None for a domain error raised on our side) and the safe domain error."""
    if isinstance(exc, LatchkeyError):
        return None, exc
    cause = classify(_RULES, exc, operation(action))
    return cause, domain_error(cause, exc, action, messages)


def translate_error(
    exc: BaseException, action: str, messages: Mapping[Cause, str] | None = None
) -> LatchkeyError:
    """Map an hvac/requests exception to a domain error whose message is safe to show."""
    return translate(exc, action, messages)[1]


def _log_in(client: Any, auth: LoginAuth) -> Any:
    """The login request of each method (reads a credential file now: runs on the pool)."""
    if isinstance(auth, AppRoleAuth):
        login, args = client.auth.approle.login, (auth.role_id, reveal(auth.secret_id))
    elif isinstance(auth, UserpassAuth):
        login, args = client.auth.userpass.login, (auth.username, reveal(auth.password))
    else:
        return client.auth.jwt.jwt_login(
            auth.role, reveal(auth.jwt), use_token=False, path=auth.mount
        )
    return login(*args, use_token=False, mount_point=auth.mount)


def _check_health(client: Any) -> None:
    """`GET sys/health`, a standby counting as healthy. hvac returns the other answers instead
    of raising: they are raised here as Vault's errors are (sealed: 503 "Vault is sealed")."""
    resp = client.sys.read_health_status(
        method="GET", standby_ok=True, performance_standby_code=200
    )
    status = int(getattr(resp, "status_code", 200))
    if status < 300:
        return
    try:
        body = resp.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    if body.get("initialized") is False:
        raise hvac_exc.VaultNotInitialized(errors=["Vault is not initialized"])
    # Sealed, a DR secondary (472), anything else: Vault cannot serve the gateway.
    sealed = body.get("sealed") is True
    raise hvac_exc.VaultDown(errors=["Vault is sealed" if sealed else f"health: HTTP {status}"])


# ---------------------------------------------------------------- the adapter


class VaultAdapter(TokenKeeper):
    """Implements `VaultUpstream` over hvac. Also exposes `name`/`reachable`/`last_contact`
    for the gateway's status service. Token bookkeeping lives in `TokenKeeper`."""

    name = "vault"

    def __init__(
        self,
        config: VaultAdapterConfig,
        *,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], float] = time.time,
        telemetry: Telemetry | None = None,
    ) -> None:
        super().__init__(config, clock)
        self._requests = (telemetry or Telemetry()).upstream_requests
        self._factory: ClientFactory = client_factory or self._hvac_client
        self._pool = ThreadPoolExecutor(
            max_workers=config.pool_size, thread_name_prefix="latchkey-vault"
        )
        self._role_ttl: dict[tuple[str, str], tuple[float | None, float]] = {}

    @classmethod
    def from_settings(
        cls, settings: VaultSettings, *, telemetry: Telemetry | None = None
    ) -> VaultAdapter:
        return cls(config_from_settings(settings), telemetry=telemetry)

    def _hvac_client(self, token: str | None) -> Any:
        return hvac.Client(
            url=self.config.addr,
            token=token,
            timeout=self.config.timeout,
            verify=self.config.verify,
        )

    def __repr__(self) -> str:
        return f"VaultAdapter(addr={self.config.addr!r}, reachable={self.reachable})"

    # ------------------------------------------------------------ reachability

    @property
    def reachable(self) -> bool:
        return self._reach.reachable

    @property
    def refused(self) -> bool:
        return self._reach.refused

    @property
    def last_contact(self) -> datetime | None:
        return self._reach.last_contact

    def add_state_listener(self, listener: StateListener) -> Callable[[], None]:
        return self._reach.add_listener(listener)

    # ------------------------------------------------------------ calling hvac

    async def _call(
        self,
        fn: Callable[[], T],
        *,
        action: str,
        idempotent: bool,
        messages: Mapping[Cause, str] | None = None,
        attempts: int | None = None,
    ) -> T:
        """Run one hvac call on the pool, translating errors and retrying transient ones."""
        loop = asyncio.get_running_loop()
        tries = max(1, attempts if attempts is not None else self.config.retry_attempts)
        for attempt in itertools.count():
            try:
                # One span per request (attempt), named by its fixed operation label: the
                # action text may name a secret path, so it never becomes an attribute.
                with child_span(
                    "vault " + operation(action),
                    {"latchkey.upstream": "vault", "latchkey.operation": operation(action),
                     "latchkey.attempt": attempt + 1},
                ):  # fmt: skip
                    result = await loop.run_in_executor(self._pool, fn)
            except Exception as exc:
                cause, error = translate(exc, action, messages)
                if cause is not None:  # else the call failed on our side: Vault was not asked
                    self._reach.note(answered=not isinstance(error, Unavailable))
                outcome = "not_found" if isinstance(error, NotFound) else "error"
                self._requests.labels("vault", operation(action), outcome).inc()
                retry = cause is not None and OUTCOMES[cause].retry in (
                    (Retry.ALWAYS, Retry.IF_IDEMPOTENT) if idempotent else (Retry.ALWAYS,)
                )
                if not retry or attempt + 1 >= tries or self._closed:
                    level = logging.DEBUG if isinstance(error, NotFound) else logging.INFO
                    log.log(level, "vault: %s failed: %s %s", action, type(exc).__name__,
                            vault_messages(exc))  # fmt: skip
                    raise error from exc
                await asyncio.sleep(
                    backoff.delay(
                        attempt + 1,
                        self.config.retry_base_delay,
                        self.config.retry_max_delay,
                        random.random(),
                    )
                )
            else:
                self._reach.note(answered=True)
                self._requests.labels("vault", operation(action), "ok").inc()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _with_token(
        self,
        call: Callable[[Any], T],
        *,
        action: str,
        idempotent: bool,
        messages: Mapping[Cause, str] | None = None,
    ) -> tuple[T, TokenRecord]:
        """Run `call(client)` with the current token; if it died, log in again once and retry."""
        tok = await self._token()
        try:
            return await self._call(
                functools.partial(call, tok.client), action=action, idempotent=idempotent,
                messages=messages,
            ), tok  # fmt: skip
        except PermissionDenied:
            if not self.config.auth.logs_in or await self._token_alive(tok):
                raise
            self._bury(tok)
            tok = await self._token()
            result = await self._call(
                functools.partial(call, tok.client), action=action, idempotent=idempotent,
                messages=messages,
            )  # fmt: skip
            return result, tok

    async def _token_alive(self, tok: TokenRecord, *, attempts: int | None = None) -> bool:
        try:
            await self._call(
                tok.client.auth.token.lookup_self, action="look up its own token", idempotent=True,
                attempts=attempts,
            )  # fmt: skip
        except PermissionDenied:
            return False
        return True

    # ------------------------------------------------------------ authentication and token calls

    async def _login(self) -> TokenRecord:
        auth, now = self.config.auth, self._clock()
        action = f"log in with {auth.method}"
        if isinstance(auth, TokenAuth):
            # A given token: "logging in" is looking it up (its file, if any, is read now).
            client, resp = await self._call(
                functools.partial(self._look_up_given, auth), action=action, idempotent=True
            )
            data = resp.get("data") or {}
            ttl = float(data.get("ttl") or 0)
            tok = TokenRecord(
                client=client,
                owned=False,
                ttl=float(data.get("creation_ttl") or ttl),
                renewable=bool(data.get("renewable")),
                expires_at=now + ttl if ttl > 0 else None,
                next_renew_at=None,
                accessor=str(data.get("accessor") or ""),
            )
        else:
            anon = self._factory(None)
            resp = await self._call(
                functools.partial(_log_in, anon, auth), action=action, idempotent=True
            )
            data = resp["auth"]
            ttl = float(data.get("lease_duration") or 0)
            tok = TokenRecord(
                client=self._factory(str(data["client_token"])),
                owned=True,
                ttl=ttl,
                renewable=bool(data.get("renewable")),
                expires_at=now + ttl if ttl > 0 else None,
                next_renew_at=None,
                accessor=str(data.get("accessor") or ""),
            )
        return self._adopt(tok, now, ttl)

    def _look_up_given(self, auth: TokenAuth) -> tuple[Any, Any]:
        client = self._factory(reveal(auth.token))
        return client, client.auth.token.lookup_self()

    async def _renew_self(self, tok: TokenRecord) -> Any:
        return await self._call(
            tok.client.auth.token.renew_self, action="renew its token", idempotent=True,
            attempts=1,
        )  # fmt: skip

    async def _revoke_self(self, tok: TokenRecord, action: str) -> None:
        await self._call(
            tok.client.auth.token.revoke_self, action=action, idempotent=True, attempts=1
        )

    # ------------------------------------------------------------ VaultUpstream

    async def read_kv(self, mount: str, path: str, version: int = 0) -> KvSecret:
        where = f"{mount}/{path}" + (f" version {version}" if version else "")
        resp, _ = await self._with_token(
            lambda c: c.secrets.kv.v2.read_secret_version(
                path=path, version=version or None, mount_point=mount, raise_on_deleted_version=True
            ),
            action=f"read secret {where}", idempotent=True,
            messages={Cause.MISSING: f"secret {where} not found"},
        )  # fmt: skip
        return kv_secret(resp, where)

    async def kv_current_version(self, mount: str, path: str) -> int:
        where = f"{mount}/{path}"
        resp, _ = await self._with_token(
            lambda c: c.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount),
            action=f"read secret metadata {where}", idempotent=True,
            messages={Cause.MISSING: f"secret {where} not found"},
        )  # fmt: skip
        return kv_current_version(resp, where)

    async def issue_credentials(self, mount: str, role: str) -> IssuedLease:
        resp, tok = await self._with_token(
            lambda c: c.secrets.database.generate_credentials(name=role, mount_point=mount),
            action=f"issue credentials for database role {role!r}", idempotent=False,
            messages={
                Cause.MISSING: f"database secrets engine mount {mount!r} not found",
                Cause.UNKNOWN_ROLE: f"database role {role!r} not found on mount {mount!r}",
            },
        )  # fmt: skip
        now = self._clock()
        data = resp.get("data") or {}
        lease_id = str(resp["lease_id"])
        duration = float(resp.get("lease_duration") or 0)
        tok.leases[lease_id] = now + duration
        return IssuedLease(
            lease_id=lease_id,
            username=str(data["username"]),
            password=str(data["password"]),
            lease_duration=duration,
            renewable=bool(resp.get("renewable")),
            warnings=response_warnings(resp),
            token_accessor=tok.accessor,
        )

    async def renew_lease(self, lease_id: str, increment: float | None = None) -> RenewedLease:
        owner = self._owner(lease_id)
        tok = owner or await self._token()
        if tok.dead:
            raise NotFound(f"lease {lease_id} no longer exists in Vault (its token ended)")
        step = max(1, math.ceil(increment)) if increment else None
        try:
            resp = await self._call(
                functools.partial(tok.client.sys.renew_lease, lease_id=lease_id, increment=step),
                action=f"renew lease {lease_id}", idempotent=True,
                messages={
                    Cause.MISSING: f"lease {lease_id} not found in Vault",
                    Cause.LEASE_GONE: f"lease {lease_id} no longer exists in Vault",
                    Cause.NOT_RENEWABLE: f"Vault will not renew lease {lease_id} any further",
                },
            )  # fmt: skip
        except PermissionDenied:
            if await self._token_alive(tok):
                raise
            # The token that owns the lease is gone (revoked, or Vault lost it): so is the lease.
            self._bury(tok)
            raise NotFound(
                f"lease {lease_id} no longer exists in Vault: the Vault token that created it "
                "is gone"
            ) from None
        now = self._clock()
        duration = float(resp.get("lease_duration") or 0)
        if owner is not None:
            owner.leases[lease_id] = now + duration
        return RenewedLease(
            lease_id=str(resp.get("lease_id") or lease_id),
            lease_duration=duration,
            renewable=bool(resp.get("renewable")),
            warnings=response_warnings(resp),
        )

    async def lookup_lease(self, lease_id: str) -> None:
        await self._with_token(
            lambda c: c.sys.read_lease(lease_id=lease_id),
            action=f"look up lease {lease_id}", idempotent=True,
            messages={
                Cause.MISSING: f"Vault knows no lease {lease_id}",
                Cause.LEASE_GONE: f"Vault knows no lease {lease_id} (expired, revoked, or never "
                "issued)",
            },
        )  # fmt: skip

    async def revoke_lease(self, lease_id: str) -> None:
        owner = self._owner(lease_id)
        if owner is not None and owner.dead:
            owner.leases.pop(lease_id, None)
            return
        tok = owner or await self._token()
        call = functools.partial(self._revoke_with, lease_id=lease_id)
        try:
            await self._call(
                functools.partial(call, tok.client),
                action=f"revoke lease {lease_id}",
                idempotent=True,
            )
        except PermissionDenied:
            current = await self._token()
            if current is tok:
                raise
            # The owner may have lost its rights; any token allowed to revoke will do.
            await self._call(
                functools.partial(call, current.client), action=f"revoke lease {lease_id}",
                idempotent=True,
            )  # fmt: skip
        if owner is not None:
            owner.leases.pop(lease_id, None)
            if not owner.leases and owner is not self._current:
                self._wake.set()

    @staticmethod
    def _revoke_with(client: Any, *, lease_id: str) -> None:
        client.sys.revoke_lease(lease_id=lease_id)

    async def ping(self) -> None:
        """`sys/health` (unauthenticated), then the gateway's own token: refreshes reachability
        even when nothing else runs, and notices a token that vanished (Vault restarted empty,
        the token revoked out of band) and logs in again. Raises Unavailable when Vault is
        sealed, uninitialised or unreachable."""
        client = self._factory(None)
        await self._call(
            functools.partial(_check_health, client),
            action="check health",
            idempotent=True,
            attempts=1,
        )
        await self._check_token()

    async def role_max_ttl(self, mount: str, role: str) -> float | None:
        key, now = (mount, role), self._clock()
        cached = self._role_ttl.get(key)
        if cached is not None and now - cached[1] < self.config.role_ttl_cache:
            return cached[0]
        caps: list[float] = [VAULT_SYSTEM_MAX_TTL]
        try:
            resp, _ = await self._with_token(
                lambda c: c.secrets.database.read_role(name=role, mount_point=mount),
                action=f"read database role {role!r}", idempotent=True,
            )  # fmt: skip
            caps.append(float((resp.get("data") or {}).get("max_ttl") or 0))
        except Unavailable:
            raise
        except LatchkeyError:
            pass  # no right to read roles, or no such role: the mount and system caps remain
        try:
            resp, _ = await self._with_token(
                lambda c: c.sys.read_mount_configuration(path=mount),
                action=f"read the configuration of mount {mount!r}", idempotent=True,
            )  # fmt: skip
            body = (resp.get("data") or resp) if isinstance(resp, dict) else {}
            caps.append(float(body.get("max_lease_ttl") or 0))
        except Unavailable:
            raise
        except LatchkeyError:
            pass
        value = min(c for c in caps if c > 0)
        self._role_ttl[key] = (value, now)
        return value

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Authenticate now (optional: the first call does it too)."""
        await self._token()

    async def close(self) -> None:
        """Stop renewing; revoke the tokens we logged in for (and so any lease left under them)."""
        if not self._closed:
            await self._stop_keeping()
            self._pool.shutdown(wait=False, cancel_futures=True)
