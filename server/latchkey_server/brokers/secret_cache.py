"""The KV v2 secret cache: a bounded TTL cache with single-flight reads and stale-if-error.

- A value is served from cache for `ttl` seconds, then read again from Vault.
- Concurrent misses for the same (mount, path, version) share one upstream read.
- NotFound is remembered for `negative_ttl` seconds.
- When Vault is Unavailable, the last value is served with `freshness.stale=True` while it is
  at most `stale_limit` seconds old; older than that, Unavailable is raised. While Vault is
  failing, one read per key is attempted at most every `retry_after` seconds.
- At most `max_entries` keys are kept, least recently used evicted first.

`get` returns the cached secret object itself (shared by every caller until the entry is
replaced; its mappings are read-only) with the freshness of this read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import MappingProxyType

from latchkey_server.brokers.singleflight import SingleFlight
from latchkey_server.errors import InvalidArgument, NotFound, Unavailable
from latchkey_server.models import Freshness, KvSecret, utcnow
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.upstreams.vault_port import VaultUpstream

Key = tuple[str, str, int]


@dataclass(slots=True)
class _Entry:
    secret: KvSecret | None
    """None: a cached NotFound."""
    fetched: float
    """Monotonic time of the upstream answer."""
    confirmed_at: datetime
    not_found: str = ""
    retry_at: float = 0.0
    """While Vault is failing: do not ask again before this (monotonic)."""


class SecretCache:
    def __init__(
        self,
        vault: VaultUpstream,
        *,
        ttl: float = 30.0,
        negative_ttl: float = 2.0,
        stale_limit: float = 300.0,
        max_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry | None = None,
    ) -> None:
        if max_entries < 1:
            raise InvalidArgument("max_entries must be at least 1")
        self._vault = vault
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._stale_limit = stale_limit
        self._max_entries = max_entries
        self._clock = clock
        counts = (telemetry or Telemetry()).secret_cache
        # The labelled children, looked up once (a `labels()` call per read cost a microsecond).
        self._hits, self._misses, self._stale, self._negative = (
            counts.labels(result=result) for result in ("hit", "miss", "stale", "negative")
        )
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._flight: SingleFlight[Key, tuple[KvSecret, Freshness]] = SingleFlight()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, mount: str, path: str, version: int = 0) -> tuple[KvSecret, Freshness]:
        """The secret (the cached object, read-only) and how fresh it is. NotFound, or
        Unavailable when Vault is down and no recent enough copy exists."""
        key = (mount, path, version)
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None:
            self._entries.move_to_end(key)
            if entry.secret is None:
                if now - entry.fetched < self._negative_ttl:
                    self._negative.inc()
                    raise NotFound(entry.not_found)
            elif now - entry.fetched < self._ttl:
                self._hits.inc()
                return self._served(entry, stale=False, reachable=self._vault.reachable)
            elif now < entry.retry_at and now - entry.fetched <= self._stale_limit:
                self._stale.inc()
                return self._served(entry, stale=True, reachable=False)
        self._misses.inc()
        return await self._flight.do(key, lambda: self._fetch(key))

    async def _fetch(self, key: Key) -> tuple[KvSecret, Freshness]:
        mount, path, version = key
        try:
            secret = await self._vault.read_kv(mount, path, version)
        except NotFound as exc:
            self._store(key, _Entry(None, self._clock(), utcnow(), not_found=exc.message))
            raise
        except Unavailable as exc:
            entry = self._entries.get(key)
            now = self._clock()
            if entry is None or entry.secret is None or now - entry.fetched > self._stale_limit:
                raise
            entry.retry_at = now + min(exc.retry_after or 1.0, self._ttl or 1.0)
            return self._served(entry, stale=True, reachable=False)
        shared = replace(
            secret,
            data=MappingProxyType(dict(secret.data)),
            custom_metadata=MappingProxyType(dict(secret.custom_metadata)),
        )
        entry = _Entry(shared, self._clock(), utcnow())
        self._store(key, entry)
        return self._served(entry, stale=False, reachable=True)

    def _store(self, key: Key, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    @staticmethod
    def _served(entry: _Entry, *, stale: bool, reachable: bool) -> tuple[KvSecret, Freshness]:
        secret = entry.secret
        assert secret is not None
        return secret, Freshness(secret.version, entry.confirmed_at, stale, reachable)

    def age(self, mount: str, path: str, version: int = 0) -> timedelta | None:
        """How old the cached copy is (None: not cached)."""
        entry = self._entries.get((mount, path, version))
        if entry is None:
            return None
        return timedelta(seconds=self._clock() - entry.fetched)
