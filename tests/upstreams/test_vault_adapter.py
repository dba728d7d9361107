"""VaultAdapter without a Vault: error translation, retries, threads, token bookkeeping.

A stub stands in for hvac.Client (the adapter's `client_factory` seam); the hvac exceptions
raised are the real ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from types import SimpleNamespace
from typing import Any

import hvac.exceptions as hvac_exc
import pytest
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
from latchkey_server.upstreams.vault import (
    AppRoleAuth,
    TokenAuth,
    VaultAdapter,
    VaultAdapterConfig,
    translate_error,
)
from latchkey_server.upstreams.vault_port import VAULT_SYSTEM_MAX_TTL, VaultUpstream

SECRET = "hvs.SUPERSECRETTOKENVALUE123456"


def test_translate_error_table() -> None:
    cases: list[tuple[BaseException, type[LatchkeyError]]] = [
        (hvac_exc.InvalidPath(errors=[]), NotFound),
        (hvac_exc.Forbidden(errors=["permission denied"]), PermissionDenied),
        (hvac_exc.Unauthorized(errors=[]), PermissionDenied),
        (hvac_exc.InvalidRequest(errors=["bad thing"]), InvalidArgument),
        (hvac_exc.RateLimitExceeded(errors=[]), ResourceExhausted),
        (hvac_exc.VaultDown(errors=["Vault is sealed"]), Unavailable),
        (hvac_exc.InternalServerError(errors=["boom"]), Unavailable),
        (hvac_exc.BadGateway(errors=[]), Unavailable),
        (requests.exceptions.ConnectionError("refused"), Unavailable),
        (requests.exceptions.ReadTimeout("slow"), Unavailable),
        (hvac_exc.UnexpectedError(errors=[]), LatchkeyError),
        (ValueError("weird"), LatchkeyError),
    ]
    for exc, expected in cases:
        error = translate_error(exc, "do a thing")
        assert type(error) is expected, (exc, error)
        if isinstance(error, Unavailable | ResourceExhausted):
            assert error.retry_after is not None
            assert error.retry_after > 0
    assert "hide/me" in translate_error(hvac_exc.InvalidPath(), "x", not_found="hide/me").message


def test_translated_messages_are_redacted() -> None:
    exc = hvac_exc.InvalidRequest(
        errors=[f"token {SECRET} is bad; password=hunter2; secret_id: abc-123"],
        url=f"http://vault/v1/x?token={SECRET}",
    )
    message = translate_error(exc, "do a thing").message
    assert SECRET not in message
    assert "hunter2" not in message
    assert "abc-123" not in message
    assert "Vault rejected the request to do a thing" in message
    forbidden = translate_error(hvac_exc.Forbidden(errors=[SECRET]), "read").message
    assert SECRET not in forbidden


# ---------------------------------------------------------------- a stub hvac client


class StubVault:
    """Programmable replies for the hvac calls the adapter makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.threads: set[str] = set()
        self.replies: dict[str, list[Any]] = {}
        self.tokens: list[str | None] = []
        self.login_ttl = 3600

    def reply(self, op: str, *answers: Any) -> None:
        self.replies.setdefault(op, []).extend(answers)

    def _answer(self, op: str, default: Any) -> Any:
        self.calls.append(op)
        self.threads.add(threading.current_thread().name)
        queue = self.replies.get(op)
        answer = queue.pop(0) if queue else default
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def factory(self, token: str | None) -> Any:
        self.tokens.append(token)
        op = self._answer

        def fn(name: str, default: Any) -> Callable[..., Any]:
            return lambda *a, **k: op(name, default)

        creds = {
            "lease_id": "database/creds/app/L1",
            "lease_duration": 60,
            "renewable": True,
            "data": {"username": "v-app", "password": "pw-very-secret"},
            "warnings": None,
        }
        kv = {"data": {"data": {"k": "v"}, "metadata": {
            "version": 3, "created_time": "2024-01-02T03:04:05.123456789Z", "custom_metadata": None,
        }}}  # fmt: skip
        login = {"auth": {"client_token": f"hvs.t{len(self.tokens)}", "lease_duration":
                          self.login_ttl, "renewable": True}}  # fmt: skip
        return SimpleNamespace(
            secrets=SimpleNamespace(
                kv=SimpleNamespace(v2=SimpleNamespace(read_secret_version=fn("read_kv", kv))),
                database=SimpleNamespace(
                    generate_credentials=fn("creds", creds),
                    read_role=fn("read_role", {"data": {"max_ttl": 600}}),
                ),
            ),
            sys=SimpleNamespace(
                renew_lease=fn("renew", {"lease_id": "database/creds/app/L1",
                                         "lease_duration": 60, "renewable": True}),
                revoke_lease=fn("revoke", None),
                read_mount_configuration=fn("tune", {"data": {"max_lease_ttl": 1200}}),
            ),
            auth=SimpleNamespace(
                token=SimpleNamespace(
                    lookup_self=fn("lookup_self", {"data": {"ttl": 0, "renewable": False}}),
                    renew_self=fn("renew_self", {"auth": {"lease_duration": self.login_ttl,
                                                          "renewable": True}}),
                    revoke_self=fn("revoke_self", None),
                ),
                approle=SimpleNamespace(login=fn("login", login)),
            ),
        )  # fmt: skip


@pytest.fixture
def stub() -> StubVault:
    return StubVault()


@pytest.fixture
async def make_adapter(stub: StubVault) -> AsyncGenerator[Callable[..., VaultAdapter], None]:
    adapters: list[VaultAdapter] = []

    def make(auth: Any = None, **kwargs: Any) -> VaultAdapter:
        kwargs.setdefault("retry_base_delay", 0.001)
        config = VaultAdapterConfig(
            addr="http://vault.invalid", auth=auth or TokenAuth(SECRET), **kwargs
        )
        adapter = VaultAdapter(config, client_factory=stub.factory)
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.close()


async def test_is_a_vault_upstream(make_adapter: Any) -> None:
    adapter: VaultAdapter = make_adapter()
    assert SECRET not in repr(adapter)
    assert SECRET not in repr(adapter.config)
    assert isinstance(adapter, VaultUpstream)


async def test_read_kv_runs_off_the_event_loop(stub: StubVault, make_adapter: Any) -> None:
    adapter = make_adapter(pool_size=2)
    secret = await adapter.read_kv("secret", "app")
    assert secret.data == {"k": "v"}
    assert secret.version == 3
    assert secret.created_time is not None
    assert secret.created_time.microsecond == 123456
    assert secret.custom_metadata == {}
    assert threading.current_thread().name not in stub.threads
    assert all(name.startswith("latchkey-vault") for name in stub.threads)
    assert adapter.reachable
    assert adapter.last_contact is not None


async def test_not_found_names_the_secret(stub: StubVault, make_adapter: Any) -> None:
    stub.reply("read_kv", hvac_exc.InvalidPath(errors=[]))
    with pytest.raises(NotFound, match="secret/app version 2 not found"):
        await make_adapter().read_kv("secret", "app", 2)


async def test_transient_errors_are_retried_for_idempotent_calls(
    stub: StubVault, make_adapter: Any
) -> None:
    stub.reply("read_kv", hvac_exc.VaultDown(errors=[]), requests.exceptions.ConnectionError())
    secret = await make_adapter(retry_attempts=3).read_kv("secret", "app")
    assert secret.version == 3
    assert stub.calls.count("read_kv") == 3


async def test_retries_give_up_with_unavailable(stub: StubVault, make_adapter: Any) -> None:
    adapter = make_adapter(retry_attempts=2)
    changes: list[bool] = []
    adapter.add_reachability_listener(changes.append)
    await adapter.read_kv("secret", "app")
    stub.reply("read_kv", *[requests.exceptions.ConnectionError()] * 2)
    with pytest.raises(Unavailable) as info:
        await adapter.read_kv("secret", "app")
    assert info.value.retry_after
    assert stub.calls.count("read_kv") == 3
    assert not adapter.reachable
    await adapter.read_kv("secret", "app")
    assert adapter.reachable
    assert changes == [False, True]


async def test_issuing_is_not_retried_after_an_ambiguous_failure(
    stub: StubVault, make_adapter: Any
) -> None:
    adapter = make_adapter(retry_attempts=3)
    stub.reply("creds", requests.exceptions.ReadTimeout())
    with pytest.raises(Unavailable):
        await adapter.issue_credentials("database", "app")
    assert stub.calls.count("creds") == 1
    stub.reply("creds", hvac_exc.VaultDown(errors=[]))  # 503: Vault did nothing, safe to retry
    issued = await adapter.issue_credentials("database", "app")
    assert stub.calls.count("creds") == 3
    assert issued.username == "v-app"
    assert issued.lease_duration == 60
    assert "pw-very-secret" not in repr(issued)


async def test_issue_errors(stub: StubVault, make_adapter: Any) -> None:
    adapter = make_adapter()
    stub.reply("creds", hvac_exc.InvalidRequest(errors=["unknown role: nope"]))
    with pytest.raises(NotFound, match="'nope'"):
        await adapter.issue_credentials("database", "nope")
    stub.reply("creds", hvac_exc.Forbidden(errors=["1 error occurred:\n\t* permission denied\n\n"]))
    stub.reply("lookup_self", {"data": {"ttl": 0}})
    with pytest.raises(PermissionDenied):
        await adapter.issue_credentials("database", "app")


async def test_renew_error_meanings(stub: StubVault, make_adapter: Any) -> None:
    adapter = make_adapter()
    stub.reply("renew", hvac_exc.InvalidRequest(errors=["lease not found"]))
    with pytest.raises(NotFound):
        await adapter.renew_lease("database/creds/app/L1")
    stub.reply("renew", hvac_exc.InvalidRequest(errors=["lease expired"]))
    with pytest.raises(NotFound):
        await adapter.renew_lease("database/creds/app/L1")
    stub.reply("renew", hvac_exc.InvalidRequest(errors=["lease is not renewable"]))
    with pytest.raises(FailedPrecondition):
        await adapter.renew_lease("database/creds/app/L1")
    stub.reply("renew", hvac_exc.InvalidRequest(errors=["past the max TTL, cannot renew"]))
    with pytest.raises(FailedPrecondition):
        await adapter.renew_lease("database/creds/app/L1")
    renewed = await adapter.renew_lease("database/creds/app/L1", 30.4)
    assert renewed.lease_duration == 60


async def test_role_max_ttl_takes_the_smallest_cap_and_is_cached(
    stub: StubVault, make_adapter: Any
) -> None:
    adapter = make_adapter()
    assert await adapter.role_max_ttl("database", "app") == 600
    assert await adapter.role_max_ttl("database", "app") == 600
    assert stub.calls.count("read_role") == 1
    stub.reply("read_role", hvac_exc.Forbidden(errors=[]))
    stub.reply("lookup_self", {"data": {"ttl": 0}})
    assert await adapter.role_max_ttl("database", "other") == 1200  # the mount's cap
    stub.reply("read_role", {"data": {"max_ttl": 0}})
    stub.reply("tune", hvac_exc.InvalidPath(errors=[]))
    assert await adapter.role_max_ttl("database", "third") == VAULT_SYSTEM_MAX_TTL


async def test_approle_login_and_relogin_when_the_token_died(
    stub: StubVault, make_adapter: Any
) -> None:
    adapter = make_adapter(AppRoleAuth("role-id", "secret-id-value"))
    await adapter.read_kv("secret", "app")
    assert adapter.logins == 1
    first_token = stub.tokens[-1]
    assert stub.tokens == [None, first_token], "an anonymous client logs in, then a token client"
    # The token was revoked behind our back: 403, and lookup-self fails too.
    stub.reply("read_kv", hvac_exc.Forbidden(errors=["permission denied"]))
    stub.reply("lookup_self", hvac_exc.Forbidden(errors=["permission denied"]))
    await adapter.read_kv("secret", "app")
    assert adapter.logins == 2
    assert stub.tokens[-1] not in (None, first_token)


async def test_leases_are_renewed_and_revoked_with_their_own_token(
    stub: StubVault, make_adapter: Any
) -> None:
    adapter = make_adapter(AppRoleAuth("role-id", "secret-id-value"))
    await adapter.issue_credentials("database", "app")
    first = adapter._current
    assert first is not None
    await adapter._relogin()
    assert adapter._current is not first
    assert adapter.token_count == 2, "the old token still owns a lease"
    used: list[Any] = []
    original = first.client.sys.renew_lease

    def spy(**kwargs: Any) -> Any:
        used.append(kwargs)
        return original(**kwargs)

    first.client.sys.renew_lease = spy
    await adapter.renew_lease("database/creds/app/L1", None)
    assert used == [{"lease_id": "database/creds/app/L1", "increment": None}]
    deadlines: list[Any] = []
    adapter.add_token_deadline_listener(lambda ids, when: deadlines.append((tuple(ids), when)))
    first.hard_deadline = first.expires_at
    adapter._notify_deadline(first)
    assert deadlines
    assert deadlines[0][0] == ("database/creds/app/L1",)
    await adapter.revoke_lease("database/creds/app/L1")
    await asyncio.wait_for(_until(lambda: adapter.token_count == 1), 10)
    assert "revoke_self" in stub.calls, "the old token is revoked once its leases are gone"


async def _until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_close_revokes_owned_tokens_only(stub: StubVault, make_adapter: Any) -> None:
    given = make_adapter(TokenAuth(SECRET))
    await given.read_kv("secret", "app")
    await given.close()
    assert "revoke_self" not in stub.calls
    owned = make_adapter(AppRoleAuth("role-id", "secret-id-value"))
    await owned.read_kv("secret", "app")
    await owned.close()
    assert stub.calls.count("revoke_self") == 1
    with pytest.raises(Unavailable):
        await owned.read_kv("secret", "app")
