"""Live KV v2 secrets: one upstream poll per distinct (mount, path), fanned out to subscribers.

Vault has no blocking queries, so a watched secret is polled: every `interval` seconds (with
up to `jitter` of it added or taken at random, so that many watches do not poll in lockstep)
the poll reads the secret's metadata (`current_version`, no secret data), and only when the
version changed reads that version's data through the one read-through cache
(`SecretCache.get(mount, path, version)`: single-flight, shared with GetSecret).

- A topic (`TopicRegistry`, brokers/fanout.py) starts with its first subscriber and stops when
  the last one leaves (no linger: nothing is polled for nobody).
- A subscriber first gets the current version, then every new one (latest-value: a slow reader
  skips versions it could not take in time, never the newest), plus heartbeats every
  `heartbeat_interval` seconds and at once when Vault's reachability changes.
- While Vault cannot be read, the last version read stays the current one, and heartbeats say
  so (stale, upstream UNREACHABLE or REFUSED). A secret that disappears (deleted or destroyed)
  or that the gateway may no longer read ends its streams with that error.

Unsubscribe by closing the stream: `async with contextlib.aclosing(hub.watch(m, p)) as events:`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Callable
from datetime import datetime

from latchkey_server.brokers.fanout import Subscriber, Topic, TopicRegistry
from latchkey_server.brokers.secret_cache import SecretCache
from latchkey_server.errors import LatchkeyError, NotFound, Unavailable
from latchkey_server.models import Freshness, Heartbeat, KvSecret, SecretVersion, utcnow
from latchkey_server.upstreams.vault_port import VaultUpstream

__all__ = ["SecretWatchHub"]

log = logging.getLogger(__name__)

Key = tuple[str, str]


def poll_delay(interval: float, jitter: float, rng: Callable[[], float] = random.random) -> float:
    """`interval` moved by up to `jitter` of itself either way (never below a tenth of it)."""
    spread = interval * jitter * (2.0 * rng() - 1.0)
    return max(interval / 10.0, interval + spread)


class _SecretTopic(Topic[SecretVersion]):
    """One poll loop of one secret and the streams it feeds."""

    def __init__(self, hub: SecretWatchHub, key: Key) -> None:
        super().__init__()
        self._hub = hub
        self.key = key
        self.current: KvSecret | None = None
        self.confirmed_at: datetime | None = None
        self.polls = 0
        self.error: LatchkeyError | None = None
        """Why the topic cannot serve (set before the first version, or when it ended)."""
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        mount, path = self.key
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"latchkey-secret-poll-{mount}/{path}"
        )

    def cancel(self) -> asyncio.Task[None] | None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    def freshness(self) -> Freshness:
        vault = self._hub.vault
        reachable, refused = vault.reachable, vault.refused
        return Freshness(
            index=self.current.version if self.current is not None else 0,
            confirmed_at=self.confirmed_at,
            stale=refused or not reachable,
            reachable=reachable,
            refused=refused,
        )

    def event(self) -> SecretVersion:
        assert self.current is not None
        return SecretVersion(self.current, self.freshness())

    async def _run(self) -> None:
        hub, (mount, path) = self._hub, self.key
        while True:
            try:
                await self._poll(mount, path)
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:  # keep the last version; heartbeats tell the streams
                log.debug("secret watch %s/%s: %s", mount, path, exc.message)
                if self.current is None and self.error is None:
                    self.error = exc
                    self.loaded.set()
            except LatchkeyError as exc:  # gone, or no longer readable: end the streams
                self._end(exc)
                return
            await asyncio.sleep(poll_delay(hub.interval, hub.jitter))

    async def _poll(self, mount: str, path: str) -> None:
        vault = self._hub.vault
        self.polls += 1
        self._hub.polls += 1
        version = await vault.kv_current_version(mount, path)
        if self.current is None or version != self.current.version:
            secret, _ = await self._hub.cache.get(mount, path, version)
            self.confirmed_at = utcnow()
            self.current = secret
            self.error = None
            event = self.event()
            for sub in self.subscribers:
                sub.replace(event)
            self.loaded.set()
        else:
            self.confirmed_at = utcnow()

    def _end(self, error: LatchkeyError) -> None:
        if isinstance(error, NotFound) and self.current is not None:
            mount, path = self.key
            error = NotFound(f"secret {mount}/{path} was deleted while watched")
        self.error = error
        self.loaded.set()
        self.close_all(error)


class SecretWatchHub:
    """`watch(mount, path)` streams of KV v2 secrets, one poll per secret (module docstring)."""

    def __init__(
        self,
        vault: VaultUpstream,
        cache: SecretCache,
        *,
        interval: float = 15.0,
        jitter: float = 0.1,
        heartbeat_interval: float = 10.0,
        first_wait: float = 30.0,
    ) -> None:
        self.vault = vault
        self.cache = cache
        self.interval = interval
        self.jitter = jitter
        self.heartbeat_interval = heartbeat_interval
        self.first_wait = first_wait
        self.polls = 0
        """Metadata polls made (counter)."""
        self._registry: TopicRegistry[Key, _SecretTopic] = TopicRegistry(
            lambda key: _SecretTopic(self, key), linger=0.0
        )
        self._closed: LatchkeyError | None = None
        self._unlisten: Callable[[], None] | None = None

    @property
    def active_polls(self) -> int:
        """Secrets polled now (one per distinct watched (mount, path))."""
        return len(self._registry)

    async def start(self) -> None:
        self._closed = None
        self._unlisten = self.vault.add_state_listener(self._on_vault_state)

    def _on_vault_state(self) -> None:
        for topic in self._registry.topics():
            topic.heartbeat_all()

    async def watch(self, mount: str, path: str) -> AsyncGenerator[SecretVersion | Heartbeat, None]:
        """The current version, then new versions and heartbeats, until closed."""
        if self._closed is not None:
            raise self._closed
        key = (mount, path)
        topic = self._registry.acquire(key)
        sub: Subscriber[SecretVersion] = Subscriber(maxsize=1)
        try:
            try:
                async with asyncio.timeout(self.first_wait):
                    await topic.loaded.wait()
            except TimeoutError:
                raise Unavailable(
                    f"Vault did not answer for secret {mount}/{path} within {self.first_wait:.0f}s",
                    retry_after=1.0,
                ) from None
            if topic.current is None:
                assert topic.error is not None
                raise topic.error
            if topic.error is not None and not isinstance(topic.error, Unavailable):
                raise topic.error
            topic.subscribers.add(sub)
            sub.replace(topic.event())
            async for event in sub.stream(
                self.heartbeat_interval, lambda: Heartbeat(topic.freshness())
            ):
                yield event
        finally:
            topic.subscribers.discard(sub)
            self._registry.release(key, topic)

    async def close(self, error: LatchkeyError | None = None) -> None:
        """End every stream (with `error`: a drain says why) and stop every poll."""
        self._closed = error or Unavailable("the gateway is shutting down", retry_after=1.0)
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        await self._registry.close(self._closed)
