"""Vault token bookkeeping: which token owns each lease, when each dies, keeping them alive."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from latchkey_server import backoff
from latchkey_server.errors import LatchkeyError, PermissionDenied, Unavailable
from latchkey_server.upstreams._reachability import Reachability
from latchkey_server.upstreams._vault_config import VaultAdapterConfig
from latchkey_server.upstreams._vault_responses import response_warnings
from latchkey_server.upstreams.vault_port import TokenDeadlineListener

log = logging.getLogger("latchkey.upstreams.vault")

_labels = itertools.count(1)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def capped(granted: float, wanted: float, warnings: Sequence[str]) -> bool:
    """Whether a renewal granted less than wanted: the token reached its max TTL."""
    return granted + 0.5 < wanted or any("capped" in w or "max_ttl" in w for w in warnings)


@dataclass(eq=False)
class TokenRecord:
    """One Vault token the adapter uses: its client, its lifetime, and the leases it owns."""

    client: Any = field(repr=False)
    owned: bool
    ttl: float
    """TTL granted at login/creation (0: never expires)."""
    renewable: bool
    expires_at: float | None
    next_renew_at: float | None
    hard_deadline: float | None = None
    label: str = field(default_factory=lambda: f"token#{next(_labels)}")
    accessor: str = ""
    """The token's accessor (not a secret; recorded with the leases it creates)."""
    leases: dict[str, float] = field(default_factory=dict)
    """Lease id → when the lease expires (wall clock) as last reported by Vault."""
    failures: int = 0
    dead: bool = False

    def deadline(self) -> datetime | None:
        """When the token is known to die (its hard deadline), if known."""
        return utc(self.hard_deadline) if self.hard_deadline is not None else None


class TokenKeeper(abc.ABC):
    """Keeps the tokens that matter alive: the current one, and old ones that still own leases.

    The hvac-free half of `VaultAdapter`: it tracks the tokens, the leases each one issued and
    when each must die, renews and retires tokens, and warns the deadline listeners. The adapter
    (`upstreams/vault.py`) makes the Vault calls: `_login`, `_renew_self` and `_revoke_self`.
    """

    def __init__(self, config: VaultAdapterConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._tokens: list[TokenRecord] = []
        self._current: TokenRecord | None = None
        self._login_task: asyncio.Task[TokenRecord] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._deadline_listeners: list[TokenDeadlineListener] = []
        self._ended: OrderedDict[str, float] = OrderedDict()
        """Leases of tokens that died (lease id -> when), remembered for `token_deadline`."""
        self._reach = Reachability("vault", clock)
        self.logins = 0
        """How many times the adapter has authenticated (observable by tests and metrics)."""

    # ------------------------------------------------------------ Vault calls (the adapter's)

    @abc.abstractmethod
    async def _login(self) -> TokenRecord:
        """Authenticate; returns the new token, already adopted (see `_adopt`)."""

    @abc.abstractmethod
    async def _renew_self(self, tok: TokenRecord) -> Any:
        """Renew `tok` in Vault (one attempt); returns Vault's response."""

    @abc.abstractmethod
    async def _revoke_self(self, tok: TokenRecord, action: str) -> None:
        """Revoke `tok` in Vault (one attempt)."""

    @abc.abstractmethod
    async def _token_alive(self, tok: TokenRecord, *, attempts: int | None = None) -> bool:
        """Whether Vault still knows `tok` (it looks itself up)."""

    # ------------------------------------------------------------ listeners

    @property
    def token_count(self) -> int:
        """Tokens currently kept alive (the current one plus old ones that still own leases)."""
        return len(self._tokens)

    def add_token_deadline_listener(self, listener: TokenDeadlineListener) -> Callable[[], None]:
        self._deadline_listeners.append(listener)
        return lambda: self._discard(self._deadline_listeners, listener)

    @staticmethod
    def _discard(items: list[Any], item: object) -> None:
        with contextlib.suppress(ValueError):
            items.remove(item)

    def token_deadline(self, lease_id: str) -> datetime | None:
        """When Vault revokes the lease because its token dies (past: it died); None if the
        token is not known to die."""
        owner = self._owner(lease_id)
        if owner is not None:
            return owner.deadline()
        ended = self._ended.get(lease_id)
        return utc(ended) if ended is not None else None

    def _notify_deadline(self, tok: TokenRecord) -> None:
        if tok.hard_deadline is None or not tok.leases:
            return
        leases, when = tuple(tok.leases), utc(tok.hard_deadline)
        log.info("%s ends at %s; %d lease(s) must move first", tok.label, when, len(leases))
        for listener in list(self._deadline_listeners):
            try:
                listener(leases)
            except Exception:
                log.exception("token deadline listener failed")

    # ------------------------------------------------------------ the current token

    async def _token(self) -> TokenRecord:
        """The current token, logging in first if needed; starts the token keeper."""
        if self._closed:
            raise Unavailable("the Vault adapter is closed", retry_after=1.0)
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_tokens(), name="vault-token-keeper")
        if self._current is not None and not self._current.dead:
            return self._current
        return await self._relogin()

    async def _relogin(self) -> TokenRecord:
        """Authenticate (single-flight: concurrent callers share one login)."""
        if self._login_task is None or self._login_task.done():
            self._login_task = asyncio.create_task(self._login(), name="vault-login")
        task = self._login_task
        try:
            return await asyncio.shield(task)
        except PermissionDenied:
            self._reach.note_refused(True)  # Vault answers, but will not let the gateway in
            raise
        finally:
            if task.done() and self._login_task is task:
                self._login_task = None

    def _adopt(self, tok: TokenRecord, now: float, ttl: float) -> TokenRecord:
        """Make a freshly logged-in token the current one (`ttl`: seconds it has left).

        A token that cannot be renewed dies when its TTL ends (its hard deadline). If the
        method can log in again, its "renewal" is still scheduled: that renewal fails, and the
        failure moves work to a fresh token before the deadline, as for a token at its max TTL.
        """
        if tok.expires_at is not None:
            if not tok.renewable:
                tok.hard_deadline = tok.expires_at
            if tok.renewable or self.config.auth.logs_in:
                tok.next_renew_at = now + ttl * self.config.token_renew_fraction
        self.logins += 1
        self._reach.note_refused(False)
        log.info(
            "vault: authenticated as %s (%s, ttl %ss, renewable %s)",
            tok.label, self.config.auth.method, int(ttl), tok.renewable,
        )  # fmt: skip
        self._tokens.append(tok)
        self._current = tok
        self._wake.set()
        return tok

    def _bury(self, tok: TokenRecord) -> None:
        """A token died (expired, revoked, or Vault lost it): its leases are gone in Vault."""
        if tok.dead:
            return
        log.warning("vault %s is no longer valid", tok.label)
        tok.dead = True
        tok.hard_deadline = self._clock()
        for lease_id in tok.leases:
            self._ended[lease_id] = tok.hard_deadline
        while len(self._ended) > 4096:
            self._ended.popitem(last=False)
        self._notify_deadline(tok)
        tok.leases.clear()
        if tok in self._tokens:
            self._tokens.remove(tok)
        if self._current is tok:
            self._current = None
        self._wake.set()

    async def _check_token(self) -> None:
        """Is the current token still alive? If it vanished, its leases are gone (the brokers
        hear it through the token-deadline listeners) and the adapter logs in again; a refused
        login leaves `refused` set until one succeeds."""
        current = self._current
        if self._closed:
            return
        if current is not None:
            if await self._token_alive(current, attempts=1):
                return
            self._bury(current)
        elif self.logins == 0 and not self._reach.refused:
            return  # not logged in yet: the first call that needs Vault logs in
        with contextlib.suppress(LatchkeyError):
            await self._relogin()

    def _owner(self, lease_id: str) -> TokenRecord | None:
        for tok in self._tokens:
            if lease_id in tok.leases:
                return tok
        return None

    # ------------------------------------------------------------ the keeper

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

    async def _tend(self, tok: TokenRecord) -> float:
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
        ending = tok.hard_deadline is not None and tok.next_renew_at is None
        if current and ending and self.config.auth.logs_in:
            # New leases must not be issued under a token that is running out: log in again.
            await self._relogin()
            return now
        if tok.next_renew_at is not None and now >= tok.next_renew_at:
            await self._renew_token(tok)
        candidates = [t for t in (tok.next_renew_at, tok.expires_at) if t is not None]
        return min(candidates, default=never)

    async def _renew_token(self, tok: TokenRecord) -> None:
        now = self._clock()
        try:
            resp = await self._renew_self(tok)
        except Unavailable:
            tok.failures += 1
            remaining = (tok.expires_at or now + 60.0) - now
            retry = backoff.delay(tok.failures + 1, 0.5, 10.0, random.random()) + 0.1
            wait = min(retry, max(0.1, remaining / 3))
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
        if capped(granted, tok.ttl, response_warnings(resp)) or not tok.renewable:
            tok.hard_deadline, tok.next_renew_at = tok.expires_at, None
            log.info("vault: %s reached its max TTL", tok.label)
            await self._token_ending(tok)
        else:
            tok.next_renew_at = now + granted * self.config.token_renew_fraction

    async def _token_ending(self, tok: TokenRecord) -> None:
        """A token will die at its hard deadline: move new work to a fresh token first (so
        replacement leases are not issued under the dying one), then warn the listeners."""
        if tok is self._current and self.config.auth.logs_in:
            try:
                await self._relogin()
            except LatchkeyError as exc:
                log.warning("vault: logging in again failed (will retry): %s", exc.message)
        self._notify_deadline(tok)

    async def _retire(self, tok: TokenRecord) -> None:
        """Drop an old token that no longer owns leases (revoking it if we created it)."""
        if tok in self._tokens:
            self._tokens.remove(tok)
        tok.dead = True
        if tok.owned and not self._closed:
            with contextlib.suppress(LatchkeyError):
                await self._revoke_self(tok, "revoke an old token")
        log.info("vault: retired %s", tok.label)

    async def _stop_keeping(self) -> None:
        """Stop the keeper; revoke the tokens we logged in for (unless configured not to)."""
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
