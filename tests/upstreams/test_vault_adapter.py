"""VaultAdapter without a Vault: error translation, retries, threads, token bookkeeping.

A stub stands in for hvac.Client (the adapter's `client_factory` seam); the hvac exceptions
raised are the real ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
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
    Cause,
    FileSecret,
    JwtAuth,
    TokenAuth,
    UserpassAuth,
    VaultAdapter,
    VaultAdapterConfig,
    translate_error,
)
from latchkey_server.upstreams.vault_port import VAULT_SYSTEM_MAX_TTL, VaultUpstream

SECRET = "hvs.SUPERSECRETTOKENVALUE123456"


def test_translate_error_table() -> None:
    renew, login = "renew lease database/creds/app/L1", "log in with approle"
    cases: list[tuple[BaseException, str, type[LatchkeyError], str]] = [
        (hvac_exc.InvalidPath(errors=[]), "read secret x", NotFound, "found nothing"),
        (hvac_exc.Forbidden(errors=["permission denied"]), "read secret x", PermissionDenied,
         "Vault policy"),
        (hvac_exc.Unauthorized(errors=[]), "read secret x", PermissionDenied, "Vault policy"),
        (hvac_exc.InvalidRequest(errors=["invalid role or secret ID"]), login, PermissionDenied,
         "vault.auth"),
        (hvac_exc.Forbidden(errors=["permission denied"]), login, PermissionDenied, "vault.auth"),
        (hvac_exc.InvalidRequest(errors=["unknown role: x"]), "issue credentials", NotFound,
         "no such role"),
        (hvac_exc.InvalidRequest(errors=["lease not found"]), renew, NotFound, "no longer"),
        (hvac_exc.InvalidRequest(errors=["invalid lease"]), renew, NotFound, "no longer"),
        (hvac_exc.InvalidRequest(errors=["lease expired"]), renew, NotFound, "no longer"),
        (hvac_exc.InvalidRequest(errors=["lease is not renewable"]), renew, FailedPrecondition,
         "any further"),
        (hvac_exc.InvalidRequest(errors=["past the max TTL, cannot renew"]), renew,
         FailedPrecondition, "any further"),
        (hvac_exc.InvalidRequest(errors=["bad thing"]), "x", InvalidArgument, "bad thing"),
        (hvac_exc.RateLimitExceeded(errors=[]), "x", ResourceExhausted, "rate limiting"),
        (hvac_exc.VaultDown(errors=["Vault is sealed"]), "x", Unavailable, "sealed"),
        (hvac_exc.VaultDown(errors=["local node not active"]), "x", Unavailable, "unavailable"),
        (hvac_exc.VaultNotInitialized(errors=[]), "x", Unavailable, "not initialized"),
        (hvac_exc.InternalServerError(errors=["boom"]), "x", Unavailable, "server error"),
        (hvac_exc.BadGateway(errors=[]), "x", Unavailable, "server error"),
        (requests.exceptions.ConnectionError("refused"), "x", Unavailable, "cannot be reached"),
        (requests.exceptions.ReadTimeout("slow"), "x", Unavailable, "in time"),
        (requests.exceptions.ConnectTimeout("slow"), "x", Unavailable, "in time"),
        (hvac_exc.UnexpectedError(errors=[]), "x", LatchkeyError, "unexpectedly"),
        (ValueError("weird"), "x", LatchkeyError, "internal error"),
    ]  # fmt: skip
    for exc, action, expected, words in cases:
        error = translate_error(exc, action)
        assert type(error) is expected, (exc, error)
        assert words in error.message, (exc, error.message)
        if isinstance(error, Unavailable | ResourceExhausted):
            assert error.retry_after is not None
            assert error.retry_after > 0
    own = translate_error(hvac_exc.InvalidPath(), "x", {Cause.MISSING: "hide/me not found"})
    assert own.message == "hide/me not found"
    # A domain error raised on our side (an unreadable credential file) passes through as is.
    mine = FailedPrecondition("vault.auth.jwt_file cannot be read")
    assert translate_error(mine, "log in with jwt") is mine


def test_translated_messages_are_redacted() -> None:
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    exc = hvac_exc.InvalidRequest(
        errors=[f"token {SECRET} is bad; password=hunter2; secret_id: abc-123; jwt {jwt}"],
        url=f"http://vault/v1/x?token={SECRET}",
    )
    message = translate_error(exc, "do a thing").message
    for secret in (SECRET, "hunter2", "abc-123", jwt, "c2lnbmF0dXJl"):
        assert secret not in message
    assert "Vault rejected the request to do a thing" in message
    forbidden = translate_error(hvac_exc.Forbidden(errors=[SECRET]), "read").message
    assert SECRET not in forbidden
    refused = translate_error(hvac_exc.InvalidRequest(errors=[f"bad {SECRET}"]), "log in with x")
    assert SECRET not in refused.message


def test_auth_reprs_hide_credentials(tmp_path: Path) -> None:
    for auth in (
        TokenAuth(SECRET),
        AppRoleAuth("role-id-value", SECRET),
        UserpassAuth("gw", SECRET),
        JwtAuth("gw", SECRET),
        JwtAuth("gw", FileSecret(tmp_path / "jwt", "vault.auth.jwt_file")),
    ):
        config = VaultAdapterConfig(addr="http://vault.invalid", auth=auth)
        for text in (repr(auth), repr(config)):
            assert SECRET not in text
            assert "role-id-value" not in text


def test_unreadable_credential_file_names_the_setting(tmp_path: Path) -> None:
    missing = FileSecret(tmp_path / "nope", "vault.auth.jwt_file")
    with pytest.raises(FailedPrecondition, match=r"vault\.auth\.jwt_file .*nope.* cannot be read"):
        missing.read()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(FailedPrecondition, match="is empty"):
        FileSecret(empty, "vault.auth.password_file").read()


# ---------------------------------------------------------------- a stub hvac client


class StubVault:
    """Programmable replies for the hvac calls the adapter makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.threads: set[str] = set()
        self.replies: dict[str, list[Any]] = {}
        self.tokens: list[str | None] = []
        self.login_ttl = 3600
        self.login_renewable = True
        self.logins: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

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
                          self.login_ttl, "renewable": self.login_renewable}}  # fmt: skip

        def log_in(method: str) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                self.logins.append((method, args, kwargs))
                return op("login", login)

            return call

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
                read_health_status=fn("health", {"initialized": True, "sealed": False}),
            ),
            auth=SimpleNamespace(
                token=SimpleNamespace(
                    lookup_self=fn("lookup_self", {"data": {"ttl": 0, "renewable": False}}),
                    renew_self=fn("renew_self", {"auth": {"lease_duration": self.login_ttl,
                                                          "renewable": True}}),
                    revoke_self=fn("revoke_self", None),
                ),
                approle=SimpleNamespace(login=log_in("approle")),
                userpass=SimpleNamespace(login=log_in("userpass")),
                jwt=SimpleNamespace(jwt_login=log_in("jwt")),
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
    adapter.add_state_listener(lambda: changes.append(adapter.reachable))
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
    """The meanings come from Vault's words (`errors`), not from our own messages."""
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


def login_auth(method: str, secret: str | FileSecret) -> AppRoleAuth | UserpassAuth | JwtAuth:
    """The adapter's auth for a method that logs in, with `secret` as its credential."""
    if method == "approle":
        return AppRoleAuth("role-id", secret, mount="ar")
    if method == "userpass":
        return UserpassAuth("gw", secret, mount="up")
    return JwtAuth("gw", secret, mount="k8s")


LOGIN_METHODS = ("approle", "userpass", "jwt")


@pytest.mark.parametrize("method", LOGIN_METHODS)
async def test_login_and_relogin_when_the_token_died(
    stub: StubVault, make_adapter: Any, method: str
) -> None:
    adapter = make_adapter(login_auth(method, "credential-value"))
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


@pytest.mark.parametrize("method", LOGIN_METHODS)
async def test_each_login_reads_the_credential_file_again(
    stub: StubVault, make_adapter: Any, method: str, tmp_path: Path
) -> None:
    path = tmp_path / "credential"
    path.write_text("first-credential\n")
    adapter = make_adapter(login_auth(method, FileSecret(path, "vault.auth.x_file")))
    await adapter.start()
    path.write_text("second-credential")
    await adapter._relogin()
    assert [login[0] for login in stub.logins] == [method, method]
    sent = [login[1] for login in stub.logins]
    mount = {"approle": "ar", "userpass": "up", "jwt": "k8s"}[method]
    assert sent[0] == ({"approle": "role-id"}.get(method, "gw"), "first-credential")
    assert sent[1][1] == "second-credential"
    for _, _, kwargs in stub.logins:
        assert kwargs["use_token"] is False
        assert mount in (kwargs.get("mount_point"), kwargs.get("path"))
    path.unlink()
    stub.reply("read_kv", *[requests.exceptions.ConnectionError()] * 3)
    with pytest.raises(Unavailable):
        await adapter.read_kv("secret", "app")
    assert not adapter.reachable
    with pytest.raises(FailedPrecondition, match=r"vault\.auth\.x_file"):
        await adapter._relogin()
    assert not adapter.reachable, "an unreadable file says nothing about Vault"


async def test_a_token_that_cannot_be_renewed_is_replaced_before_it_dies(
    stub: StubVault, make_adapter: Any
) -> None:
    stub.login_ttl, stub.login_renewable = 1, False
    adapter = make_adapter(login_auth("jwt", "jwt-value"), token_renew_fraction=0.3)
    deadlines: list[Any] = []
    adapter.add_token_deadline_listener(lambda ids: deadlines.append(tuple(ids)))
    stub.reply("renew_self", hvac_exc.InvalidRequest(errors=["lease is not renewable"]))
    await adapter.issue_credentials("database", "app")
    first = adapter._current
    assert first is not None
    assert first.deadline() is not None, "a non-renewable token's end is known at once"
    await asyncio.wait_for(_until(lambda: adapter.logins >= 2), 10)
    assert deadlines
    assert deadlines[0] == ("database/creds/app/L1",)


async def test_ping_sees_a_sealed_or_uninitialised_vault(
    stub: StubVault, make_adapter: Any
) -> None:
    adapter = make_adapter()
    await adapter.ping()
    assert adapter.reachable

    def answer(status: int, body: Any) -> Any:
        return SimpleNamespace(status_code=status, json=lambda: body)

    stub.reply("health", answer(503, {"initialized": True, "sealed": True, "standby": True}))
    with pytest.raises(Unavailable, match="sealed"):
        await adapter.ping()
    assert not adapter.reachable
    stub.reply("health", answer(501, {"initialized": False, "sealed": True}))
    with pytest.raises(Unavailable, match="not initialized"):
        await adapter.ping()
    stub.reply("health", answer(472, {"initialized": True, "sealed": False}))
    with pytest.raises(Unavailable, match="472"):
        await adapter.ping()
    await adapter.ping()
    assert adapter.reachable
    assert stub.calls.count("health") == 5, "a health check is never retried"


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
    adapter.add_token_deadline_listener(lambda ids: deadlines.append(tuple(ids)))
    first.hard_deadline = first.expires_at
    adapter._notify_deadline(first)
    assert deadlines == [("database/creds/app/L1",)]
    assert adapter.token_deadline("database/creds/app/L1") == first.deadline()
    await adapter.revoke_lease("database/creds/app/L1")
    await asyncio.wait_for(_until(lambda: adapter.token_count == 1), 10)
    assert "revoke_self" in stub.calls, "the old token is revoked once its leases are gone"


async def _until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("method", LOGIN_METHODS)
async def test_close_revokes_owned_tokens_only(
    stub: StubVault, make_adapter: Any, method: str
) -> None:
    given = make_adapter(TokenAuth(SECRET))
    await given.read_kv("secret", "app")
    await given.close()
    assert "revoke_self" not in stub.calls
    owned = make_adapter(login_auth(method, "credential-value"))
    await owned.read_kv("secret", "app")
    await owned.close()
    assert stub.calls.count("revoke_self") == 1
    with pytest.raises(Unavailable):
        await owned.read_kv("secret", "app")
