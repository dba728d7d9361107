"""`AsyncClient`, the asyncio client (source of truth for the generated `Client`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from latchkey import _convert
from latchkey._async._config import AsyncConfig
from latchkey._async._secrets import AsyncDatabase, AsyncLeases, AsyncSecrets
from latchkey._async._services import AsyncServices
from latchkey._async._transport import AsyncTransport
from latchkey._models import GatewayStatus
from latchkey._settings import ClientSettings, resolve_settings


class AsyncClient:
    """A client of one latchkey gateway, or several it fails over between.

    Arguments win; what is not given comes from `LATCHKEY_ADDR` (comma-separated addresses, or
    `consul://AGENT/SERVICE`: the replicas Consul lists as passing, kept current),
    `LATCHKEY_TOKEN`, `LATCHKEY_CACERT`, `LATCHKEY_CLIENT_CERT` and `LATCHKEY_CLIENT_KEY`.
    An address is `host:port`, `http://host:port` (plaintext) or `https://host:port` (TLS); a
    bare address uses TLS when a CA or client certificate is configured. `insecure=True` forces
    plaintext. Channels open lazily, on first use, in the running event loop.

    Example:
        async with AsyncClient() as client:
            secret = await client.secrets.get("demo/app")
    """

    def __init__(
        self,
        addr: str | Sequence[str] | None = None,
        *,
        token: str | None = None,
        cacert: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        timeout: float = 10.0,
        retry_deadline: float = 15.0,
        settings: ClientSettings | None = None,
    ) -> None:
        self.settings = settings or resolve_settings(
            addr,
            token=token,
            cacert=cacert,
            client_cert=client_cert,
            client_key=client_key,
            insecure=insecure,
            timeout=timeout,
            retry_deadline=retry_deadline,
        )
        self._transport = AsyncTransport(self.settings)
        self.secrets = AsyncSecrets(self._transport)
        """KV v2 secrets."""
        self.database = AsyncDatabase(self._transport)
        """Dynamic database credentials."""
        self.leases = AsyncLeases(self._transport)
        """Leases the gateway holds (renew, revoke, list)."""
        self.config = AsyncConfig(self._transport)
        """Live configuration."""
        self.services = AsyncServices(self._transport)
        """Service discovery."""

    def __repr__(self) -> str:
        replicas = self.settings.replicas
        targets = (
            replicas.describe() if replicas else ",".join(e.target for e in self.settings.endpoints)
        )
        return f"<{type(self).__name__} addr={targets!r}>"

    @property
    def address(self) -> str:
        """The gateway address in use now."""
        return self._transport.address

    async def status(self) -> GatewayStatus:
        """The gateway's view of the caller and the freshness of its upstreams."""
        response = await self._transport.unary(
            lambda s: s.gateway.Status, _convert.status_request()
        )
        return _convert.status(response, self._transport.address)

    async def aclose(self) -> None:
        """Close every watch and channel."""
        await self.config.aclose()
        await self.services.aclose()
        await self.secrets.aclose()
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
