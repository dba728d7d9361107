"""The Vault adapter: the only module that imports hvac.

hvac is synchronous, so every call runs on a bounded thread pool (`pool_size` threads) via
`loop.run_in_executor`; nothing blocking reaches the event loop. hvac and requests exceptions
are turned into domain errors right where the call is made (`translate_error`), and transient
failures of idempotent calls are retried with exponential backoff and full jitter.

Tokens. The adapter authenticates with a given token (renewed while renewable) or with AppRole
(log in, renew at `token_renew_fraction` of the TTL, log in again when renewal stops extending
the token). Vault makes every lease a child of the token that created it and revokes the lease
the moment that token dies. So the adapter remembers which token issued each lease, renews and
revokes a lease with that token's own client, keeps every token that still owns a live lease
alive, and revokes an old token only once its leases are gone. When an old token cannot be kept
alive to its leases' end (it reached its max TTL), the listeners registered with
`add_token_deadline_listener` are told which leases will die and when, so the lease broker can
rotate them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import hvac
import hvac.exceptions as hvac_exc
import requests

from latchkey_server.errors import (
    FailedPrecondition,
    InvalidArgument,
    LatchkeyError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from latchkey_server.models import KvSecret
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.upstreams._retry import backoff_delay
from latchkey_server.upstreams._vault_config import (
    AppRoleAuth,
    TokenAuth,
    VaultAdapterConfig,
    config_from_settings,
)
from latchkey_server.upstreams._vault_responses import kv_secret, response_warnings
from latchkey_server.upstreams._vault_tokens import TokenKeeper, TokenRecord, utc
from latchkey_server.upstreams.vault_port import (
    VAULT_SYSTEM_MAX_TTL,
    IssuedLease,
    ReachabilityListener,
    RenewedLease,
)

if TYPE_CHECKING:
    from latchkey_server.config import VaultSettings

log = logging.getLogger("latchkey.upstreams.vault")

__all__ = [
    "AppRoleAuth",
    "ClientFactory",
    "TokenAuth",
    "VaultAdapter",
    "VaultAdapterConfig",
    "backoff_delay",
    "translate_error",
    "vault_messages",
]

T = TypeVar("T")
ClientFactory = Callable[[str | None], Any]
"""Builds an hvac.Client-like object for a token (None: unauthenticated, for logging in)."""


# ---------------------------------------------------------------- error translation

_REDACT = (
    re.compile(r"\b(hv[sbr]\.|s\.)[A-Za-z0-9_.-]{8,}"),
    re.compile(r"(?i)(password|secret_id|token|secret)(\"?\s*[:=]\s*)\S+"),
)
_TRANSIENT = (
    hvac_exc.VaultDown,
    hvac_exc.BadGateway,
    hvac_exc.InternalServerError,
    hvac_exc.RateLimitExceeded,
    hvac_exc.VaultNotInitialized,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)
# Safe to retry even when the call is not idempotent: Vault certainly did not act.
_NOT_PROCESSED = (hvac_exc.VaultDown, requests.exceptions.ConnectTimeout)
_STATUS = {
    hvac_exc.VaultDown: 503,
    hvac_exc.BadGateway: 502,
    hvac_exc.InternalServerError: 500,
    hvac_exc.VaultNotInitialized: 501,
}


def vault_messages(exc: BaseException) -> str:
    """Vault's own error texts from an hvac exception, redacted and shortened (log/message safe)."""
    errors = getattr(exc, "errors", None)
    text = "; ".join(str(e) for e in errors) if isinstance(errors, list) else ""
    text = " ".join(text.split())
    for pattern in _REDACT:
        text = pattern.sub(lambda m: f"{m.group(1)}<redacted>", text)
    return text[:300]


def translate_error(
    exc: BaseException, action: str, *, not_found: str | None = None
) -> LatchkeyError:
    """Map an hvac/requests exception to a domain error whose message is safe to show."""
    if isinstance(exc, LatchkeyError):
        return exc
    if isinstance(exc, hvac_exc.InvalidPath):
        return NotFound(not_found or f"Vault found nothing to {action}")
    if isinstance(exc, hvac_exc.Forbidden | hvac_exc.Unauthorized):
        return PermissionDenied(
            f"Vault denied the gateway permission to {action}; check the gateway's Vault policy"
        )
    if isinstance(exc, hvac_exc.InvalidRequest):
        detail = vault_messages(exc)
        return InvalidArgument(
            f"Vault rejected the request to {action}" + (f": {detail}" if detail else "")
        )
    if isinstance(exc, hvac_exc.RateLimitExceeded):
        return ResourceExhausted(f"Vault is rate limiting the gateway ({action})", retry_after=1.0)
    for cls, status in _STATUS.items():
        if isinstance(exc, cls):
            return Unavailable(f"Vault is unavailable (HTTP {status}) to {action}", retry_after=1.0)
    if isinstance(exc, requests.exceptions.Timeout):
        return Unavailable(f"Vault did not answer in time to {action}", retry_after=1.0)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return Unavailable(f"Vault cannot be reached to {action}", retry_after=1.0)
    if isinstance(exc, hvac_exc.VaultError):
        return LatchkeyError(f"Vault answered unexpectedly to a request to {action}")
    return LatchkeyError(f"internal error while asking Vault to {action}")


# ---------------------------------------------------------------- the adapter


# Metric label for each kind of Vault call (a fixed vocabulary; never a path or role).
_OPERATIONS = (
    ("read secret", "kv_read"),
    ("issue credentials", "creds"),
    ("renew lease", "lease_renew"),
    ("revoke lease", "lease_revoke"),
    ("log in", "login"),
    ("look up its own token", "token_lookup"),
    ("renew its token", "token_renew"),
    ("revoke", "token_revoke"),
    ("read database role", "role_read"),
    ("read the configuration of mount", "mount_read"),
    ("check health", "health"),
)


def operation(action: str) -> str:
    """The fixed operation label for a call described by `action`."""
    for prefix, label in _OPERATIONS:
        if action.startswith(prefix):
            return label
    return "other"


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
        self._reachable = True
        self._last_contact: datetime | None = None
        self._reach_listeners: list[ReachabilityListener] = []
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
        return f"VaultAdapter(addr={self.config.addr!r}, reachable={self._reachable})"

    # ------------------------------------------------------------ health and listeners

    @property
    def reachable(self) -> bool:
        return self._reachable

    @property
    def is_reachable(self) -> bool:
        return self._reachable

    @property
    def last_contact(self) -> datetime | None:
        return self._last_contact

    def add_reachability_listener(self, listener: ReachabilityListener) -> Callable[[], None]:
        self._reach_listeners.append(listener)
        return lambda: self._discard(self._reach_listeners, listener)

    def _note(self, *, answered: bool) -> None:
        if answered:
            self._last_contact = utc(self._clock())
        if answered != self._reachable:
            self._reachable = answered
            log.warning("vault is %s", "reachable again" if answered else "unreachable")
            for listener in list(self._reach_listeners):
                try:
                    listener(answered)
                except Exception:
                    log.exception("reachability listener failed")

    # ------------------------------------------------------------ calling hvac

    async def _call(
        self,
        fn: Callable[[], T],
        *,
        action: str,
        idempotent: bool,
        not_found: str | None = None,
        attempts: int | None = None,
    ) -> T:
        """Run one hvac call on the pool, translating errors and retrying transient ones."""
        loop = asyncio.get_running_loop()
        tries = max(1, attempts if attempts is not None else self.config.retry_attempts)
        for attempt in itertools.count():
            try:
                result = await loop.run_in_executor(self._pool, fn)
            except Exception as exc:
                error = translate_error(exc, action, not_found=not_found)
                self._note(answered=not isinstance(error, Unavailable))
                outcome = "not_found" if isinstance(error, NotFound) else "error"
                self._requests.labels("vault", operation(action), outcome).inc()
                retry = isinstance(exc, _TRANSIENT) and (
                    idempotent or isinstance(exc, _NOT_PROCESSED)
                )
                if not retry or attempt + 1 >= tries or self._closed:
                    level = logging.DEBUG if isinstance(error, NotFound) else logging.INFO
                    log.log(level, "vault: %s failed: %s %s", action, type(exc).__name__,
                            vault_messages(exc))  # fmt: skip
                    raise error from exc
                await asyncio.sleep(
                    backoff_delay(
                        attempt, self.config.retry_base_delay, self.config.retry_max_delay
                    )
                )
            else:
                self._note(answered=True)
                self._requests.labels("vault", operation(action), "ok").inc()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _with_token(
        self,
        call: Callable[[Any], T],
        *,
        action: str,
        idempotent: bool,
        not_found: str | None = None,
    ) -> tuple[T, TokenRecord]:
        """Run `call(client)` with the current token; once re-login and retry if it died."""
        tok = await self._token()
        try:
            return await self._call(
                functools.partial(call, tok.client), action=action, idempotent=idempotent,
                not_found=not_found,
            ), tok  # fmt: skip
        except PermissionDenied:
            if not isinstance(self.config.auth, AppRoleAuth) or await self._token_alive(tok):
                raise
            self._bury(tok)
            tok = await self._token()
            result = await self._call(
                functools.partial(call, tok.client), action=action, idempotent=idempotent,
                not_found=not_found,
            )  # fmt: skip
            return result, tok

    async def _token_alive(self, tok: TokenRecord) -> bool:
        try:
            await self._call(
                tok.client.auth.token.lookup_self, action="look up its own token", idempotent=True
            )
        except PermissionDenied:
            return False
        return True

    # ------------------------------------------------------------ authentication and token calls

    async def _login(self) -> TokenRecord:
        auth, now = self.config.auth, self._clock()
        if isinstance(auth, AppRoleAuth):
            anon = self._factory(None)
            resp = await self._call(
                functools.partial(
                    anon.auth.approle.login, auth.role_id, auth.secret_id,
                    use_token=False, mount_point=auth.mount,
                ),
                action="log in with AppRole", idempotent=True,
            )  # fmt: skip
            data = resp["auth"]
            ttl = float(data.get("lease_duration") or 0)
            tok = TokenRecord(
                client=self._factory(str(data["client_token"])),
                owned=True,
                ttl=ttl,
                renewable=bool(data.get("renewable")),
                expires_at=now + ttl if ttl > 0 else None,
                next_renew_at=None,
            )
        else:
            client = self._factory(auth.token)
            resp = await self._call(
                client.auth.token.lookup_self, action="look up its own token", idempotent=True
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
            )
            if tok.expires_at is not None and not tok.renewable:
                tok.hard_deadline = tok.expires_at
        return self._adopt(tok, now, ttl)

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
            action=f"read secret {where}", idempotent=True, not_found=f"secret {where} not found",
        )  # fmt: skip
        return kv_secret(resp, where)

    async def issue_credentials(self, mount: str, role: str) -> IssuedLease:
        action = f"issue credentials for database role {role!r}"
        try:
            resp, tok = await self._with_token(
                lambda c: c.secrets.database.generate_credentials(name=role, mount_point=mount),
                action=action, idempotent=False,
                not_found=f"database secrets engine mount {mount!r} not found",
            )  # fmt: skip
        except InvalidArgument as exc:
            if "unknown role" in exc.message:
                raise NotFound(f"database role {role!r} not found on mount {mount!r}") from exc
            raise
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
            token_deadline=tok.deadline(),
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
                not_found=f"lease {lease_id} not found in Vault",
            )  # fmt: skip
        except InvalidArgument as exc:
            text = exc.message.lower()
            if "not renewable" in text or "max ttl" in text or "cannot renew" in text:
                raise FailedPrecondition(
                    f"Vault will not renew lease {lease_id} any further"
                ) from exc
            if "not found" in text or "expired" in text or "invalid lease" in text:
                raise NotFound(f"lease {lease_id} no longer exists in Vault") from exc
            raise
        now = self._clock()
        duration = float(resp.get("lease_duration") or 0)
        if owner is not None:
            owner.leases[lease_id] = now + duration
        return RenewedLease(
            lease_id=str(resp.get("lease_id") or lease_id),
            lease_duration=duration,
            renewable=bool(resp.get("renewable")),
            warnings=response_warnings(resp),
            token_deadline=tok.deadline(),
        )

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
        """`sys/health` (unauthenticated): refreshes reachability even when nothing else runs."""
        client = self._factory(None)
        await self._call(
            lambda: client.sys.read_health_status(method="GET"),
            action="check health",
            idempotent=True,
            attempts=1,
        )

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
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._login_task is not None and not self._login_task.done():
            self._login_task.cancel()
        if self.config.revoke_tokens_on_close:
            for tok in [t for t in self._tokens if t.owned and not t.dead]:
                with contextlib.suppress(LatchkeyError):
                    await self._revoke_self(tok, "revoke its token on shutdown")
        self._tokens.clear()
        self._current = None
        self._pool.shutdown(wait=False, cancel_futures=True)
