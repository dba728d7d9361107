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
import random
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from latchkey_server.upstreams.vault_port import (
    VAULT_SYSTEM_MAX_TTL,
    IssuedLease,
    ReachabilityListener,
    RenewedLease,
    TokenDeadlineListener,
)

if TYPE_CHECKING:
    from latchkey_server.config import VaultSettings

log = logging.getLogger("latchkey.upstreams.vault")

T = TypeVar("T")
ClientFactory = Callable[[str | None], Any]
"""Builds an hvac.Client-like object for a token (None: unauthenticated, for logging in)."""


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """Authenticate with a given token (renewed while it is renewable; never revoked by us)."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AppRoleAuth:
    """Authenticate with AppRole; the adapter owns (renews, replaces, revokes) its tokens."""

    role_id: str = field(repr=False)
    secret_id: str = field(repr=False)
    mount: str = "approle"


@dataclass(frozen=True, slots=True)
class VaultAdapterConfig:
    addr: str
    """Vault address, e.g. http://127.0.0.1:8200."""
    auth: TokenAuth | AppRoleAuth = field(repr=False)
    timeout: float = 10.0
    """Per-request timeout in seconds."""
    pool_size: int = 8
    """Threads running hvac calls."""
    verify: bool | str = True
    """TLS verification: a bool or a CA bundle path."""
    retry_attempts: int = 3
    """Attempts per idempotent call on transient errors."""
    retry_base_delay: float = 0.2
    retry_max_delay: float = 2.0
    token_renew_fraction: float = 2 / 3
    """Renew a token when this fraction of its TTL has passed."""
    role_ttl_cache: float = 60.0
    """Seconds a role's max TTL stays cached."""
    revoke_tokens_on_close: bool = True
    """On close, revoke the tokens the adapter logged in for (AppRole only)."""


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


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    return random.uniform(0.0, min(cap, base * (2.0**attempt)))


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _parse_time(raw: object) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    text = raw.replace("Z", "+00:00")
    # Go writes nanoseconds; Python parses at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _capped(granted: float, wanted: float, warnings: Sequence[str]) -> bool:
    return granted + 0.5 < wanted or any("capped" in w or "max_ttl" in w for w in warnings)


def _warnings(resp: Any) -> tuple[str, ...]:
    raw = resp.get("warnings") if isinstance(resp, dict) else None
    return tuple(str(w) for w in raw) if isinstance(raw, list) else ()


# ---------------------------------------------------------------- tokens

_labels = itertools.count(1)


@dataclass(eq=False)
class _Token:
    client: Any = field(repr=False)
    owned: bool
    ttl: float
    """TTL granted at login/creation (0: never expires)."""
    renewable: bool
    expires_at: float | None
    next_renew_at: float | None
    hard_deadline: float | None = None
    label: str = field(default_factory=lambda: f"token#{next(_labels)}")
    leases: dict[str, float] = field(default_factory=dict)
    """Lease id → when the lease expires (wall clock) as last reported by Vault."""
    failures: int = 0
    dead: bool = False


# ---------------------------------------------------------------- the adapter


class VaultAdapter:
    """Implements `VaultUpstream` over hvac. Also exposes `name`/`reachable`/`last_contact`
    for the gateway's status service."""

    name = "vault"

    def __init__(
        self,
        config: VaultAdapterConfig,
        *,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._factory: ClientFactory = client_factory or self._hvac_client
        self._clock = clock
        self._pool = ThreadPoolExecutor(
            max_workers=config.pool_size, thread_name_prefix="latchkey-vault"
        )
        self._tokens: list[_Token] = []
        self._current: _Token | None = None
        self._login_task: asyncio.Task[_Token] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._reachable = True
        self._last_contact: datetime | None = None
        self._deadline_listeners: list[TokenDeadlineListener] = []
        self._reach_listeners: list[ReachabilityListener] = []
        self._role_ttl: dict[tuple[str, str], tuple[float | None, float]] = {}
        self.logins = 0
        """How many times the adapter has authenticated (observable by tests and metrics)."""

    @classmethod
    def from_settings(cls, settings: VaultSettings) -> VaultAdapter:
        auth: TokenAuth | AppRoleAuth
        if settings.approle_role_id is not None and settings.approle_secret_id is not None:
            auth = AppRoleAuth(
                settings.approle_role_id,
                settings.approle_secret_id.get_secret_value(),
                mount=settings.approle_mount,
            )
        elif settings.token is not None:
            auth = TokenAuth(settings.token.get_secret_value())
        else:
            raise InvalidArgument(
                "set vault.token or vault.approle_role_id + vault.approle_secret_id"
            )
        return cls(
            VaultAdapterConfig(
                addr=settings.addr,
                auth=auth,
                timeout=settings.timeout,
                pool_size=settings.pool_size,
            )
        )

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

    @property
    def token_count(self) -> int:
        """Tokens currently kept alive (the current one plus old ones that still own leases)."""
        return len(self._tokens)

    def add_token_deadline_listener(self, listener: TokenDeadlineListener) -> Callable[[], None]:
        self._deadline_listeners.append(listener)
        return lambda: self._discard(self._deadline_listeners, listener)

    def add_reachability_listener(self, listener: ReachabilityListener) -> Callable[[], None]:
        self._reach_listeners.append(listener)
        return lambda: self._discard(self._reach_listeners, listener)

    @staticmethod
    def _discard(items: list[Any], item: object) -> None:
        with contextlib.suppress(ValueError):
            items.remove(item)

    def _note(self, *, answered: bool) -> None:
        if answered:
            self._last_contact = _utc(self._clock())
        if answered != self._reachable:
            self._reachable = answered
            log.warning("vault is %s", "reachable again" if answered else "unreachable")
            for listener in list(self._reach_listeners):
                try:
                    listener(answered)
                except Exception:
                    log.exception("reachability listener failed")

    def _notify_deadline(self, tok: _Token) -> None:
        if tok.hard_deadline is None or not tok.leases:
            return
        leases, when = tuple(tok.leases), _utc(tok.hard_deadline)
        log.info("%s ends at %s; %d lease(s) must move first", tok.label, when, len(leases))
        for listener in list(self._deadline_listeners):
            try:
                listener(leases, when)
            except Exception:
                log.exception("token deadline listener failed")

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
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _token(self) -> _Token:
        """The current token, logging in first if needed; starts the token keeper."""
        if self._closed:
            raise Unavailable("the Vault adapter is closed", retry_after=1.0)
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_tokens(), name="vault-token-keeper")
        if self._current is not None and not self._current.dead:
            return self._current
        return await self._relogin()

    async def _relogin(self) -> _Token:
        """Authenticate (single-flight: concurrent callers share one login)."""
        if self._login_task is None or self._login_task.done():
            self._login_task = asyncio.create_task(self._login(), name="vault-login")
        task = self._login_task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._login_task is task:
                self._login_task = None

    async def _with_token(
        self,
        call: Callable[[Any], T],
        *,
        action: str,
        idempotent: bool,
        not_found: str | None = None,
    ) -> tuple[T, _Token]:
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

    async def _token_alive(self, tok: _Token) -> bool:
        try:
            await self._call(
                tok.client.auth.token.lookup_self, action="look up its own token", idempotent=True
            )
        except PermissionDenied:
            return False
        return True

    def _bury(self, tok: _Token) -> None:
        """A token died (expired or revoked): its leases are gone in Vault."""
        if tok.dead:
            return
        log.warning("vault %s is no longer valid", tok.label)
        tok.dead = True
        tok.hard_deadline = self._clock()
        self._notify_deadline(tok)
        tok.leases.clear()
        if tok in self._tokens:
            self._tokens.remove(tok)
        if self._current is tok:
            self._current = None
        self._wake.set()

    # ------------------------------------------------------------ authentication

    async def _login(self) -> _Token:
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
            tok = _Token(
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
            tok = _Token(
                client=client,
                owned=False,
                ttl=float(data.get("creation_ttl") or ttl),
                renewable=bool(data.get("renewable")),
                expires_at=now + ttl if ttl > 0 else None,
                next_renew_at=None,
            )
            if tok.expires_at is not None and not tok.renewable:
                tok.hard_deadline = tok.expires_at
        if tok.renewable and tok.expires_at is not None:
            tok.next_renew_at = now + ttl * self.config.token_renew_fraction
        self.logins += 1
        log.info(
            "vault: authenticated as %s (%s, ttl %ss, renewable %s)",
            tok.label, type(auth).__name__, int(ttl), tok.renewable,
        )  # fmt: skip
        self._tokens.append(tok)
        self._current = tok
        self._wake.set()
        return tok

    async def _keep_tokens(self) -> None:
        """Renew every token that matters, log in again when needed, retire idle old tokens."""
        while not self._closed:
            self._wake.clear()
            next_at = self._clock() + 30.0
            for tok in list(self._tokens):
                try:
                    next_at = min(next_at, await self._tend(tok))
                except asyncio.CancelledError:
                    raise
                except LatchkeyError as exc:
                    log.warning("vault: keeping %s alive failed: %s", tok.label, exc.message)
                    next_at = min(next_at, self._clock() + 1.0)
                except Exception:
                    log.exception("vault: keeping %s alive failed", tok.label)
                    next_at = min(next_at, self._clock() + 1.0)
            delay = max(0.05, next_at - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _tend(self, tok: _Token) -> float:
        """One pass over a token; returns when it next needs attention."""
        now, never = self._clock(), self._clock() + 3600.0
        for lease_id, expires in list(tok.leases.items()):
            if expires <= now:
                del tok.leases[lease_id]
        if tok.expires_at is not None and now >= tok.expires_at:
            self._bury(tok)
            return now
        current = tok is self._current
        if not current and not tok.leases:
            await self._retire(tok)
            return now
        if current and tok.hard_deadline is not None and isinstance(self.config.auth, AppRoleAuth):
            # New leases must not be issued under a token that is running out: log in again.
            await self._relogin()
            return now
        if tok.next_renew_at is not None and now >= tok.next_renew_at:
            await self._renew_token(tok)
        candidates = [t for t in (tok.next_renew_at, tok.expires_at) if t is not None]
        return min(candidates, default=never)

    async def _renew_token(self, tok: _Token) -> None:
        now = self._clock()
        try:
            resp = await self._call(
                tok.client.auth.token.renew_self, action="renew its token", idempotent=True,
                attempts=1,
            )  # fmt: skip
        except Unavailable:
            tok.failures += 1
            remaining = (tok.expires_at or now + 60.0) - now
            wait = min(backoff_delay(tok.failures, 0.5, 10.0) + 0.1, max(0.1, remaining / 3))
            tok.next_renew_at = now + wait
            return
        except LatchkeyError as exc:
            log.warning("vault: %s cannot be renewed any more: %s", tok.label, exc.message)
            tok.renewable, tok.next_renew_at = False, None
            tok.hard_deadline = tok.expires_at
            await self._token_ending(tok)
            return
        tok.failures = 0
        data = resp.get("auth") or {}
        granted = float(data.get("lease_duration") or 0)
        tok.expires_at = now + granted
        tok.renewable = bool(data.get("renewable", True))
        if _capped(granted, tok.ttl, _warnings(resp)) or not tok.renewable:
            tok.hard_deadline, tok.next_renew_at = tok.expires_at, None
            log.info("vault: %s reached its max TTL", tok.label)
            await self._token_ending(tok)
        else:
            tok.next_renew_at = now + granted * self.config.token_renew_fraction

    async def _token_ending(self, tok: _Token) -> None:
        """A token will die at its hard deadline: move new work to a fresh token first (so
        replacement leases are not issued under the dying one), then warn the listeners."""
        if tok is self._current and isinstance(self.config.auth, AppRoleAuth):
            try:
                await self._relogin()
            except LatchkeyError as exc:
                log.warning("vault: logging in again failed (will retry): %s", exc.message)
        self._notify_deadline(tok)

    async def _retire(self, tok: _Token) -> None:
        """Drop an old token that no longer owns leases (revoking it if we created it)."""
        if tok in self._tokens:
            self._tokens.remove(tok)
        tok.dead = True
        if tok.owned and not self._closed:
            with contextlib.suppress(LatchkeyError):
                await self._call(
                    tok.client.auth.token.revoke_self, action="revoke an old token",
                    idempotent=True, attempts=1,
                )  # fmt: skip
        log.info("vault: retired %s", tok.label)

    def _owner(self, lease_id: str) -> _Token | None:
        for tok in self._tokens:
            if lease_id in tok.leases:
                return tok
        return None

    # ------------------------------------------------------------ VaultUpstream

    async def read_kv(self, mount: str, path: str, version: int = 0) -> KvSecret:
        where = f"{mount}/{path}" + (f" version {version}" if version else "")
        resp, _ = await self._with_token(
            lambda c: c.secrets.kv.v2.read_secret_version(
                path=path, version=version or None, mount_point=mount, raise_on_deleted_version=True
            ),
            action=f"read secret {where}", idempotent=True, not_found=f"secret {where} not found",
        )  # fmt: skip
        body = resp.get("data") or {}
        meta = body.get("metadata") or {}
        if body.get("data") is None:
            raise NotFound(f"secret {where} not found")
        return KvSecret(
            data=dict(body["data"]),
            version=int(meta.get("version") or 0),
            created_time=_parse_time(meta.get("created_time")),
            custom_metadata={
                str(k): str(v) for k, v in (meta.get("custom_metadata") or {}).items()
            },
        )

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
            warnings=_warnings(resp),
            token_deadline=_utc(tok.hard_deadline) if tok.hard_deadline is not None else None,
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
            warnings=_warnings(resp),
            token_deadline=_utc(tok.hard_deadline) if tok.hard_deadline is not None else None,
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
                    await self._call(
                        tok.client.auth.token.revoke_self, action="revoke its token on shutdown",
                        idempotent=True, attempts=1,
                    )  # fmt: skip
        self._tokens.clear()
        self._current = None
        self._pool.shutdown(wait=False, cancel_futures=True)
