"""Replies serialized once per object: the same bytes the messages would give, freed with it."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from google.protobuf import timestamp_pb2

from latchkey.v1 import common_pb2, secrets_pb2
from latchkey_server import models
from latchkey_server.transport import convert


def test_secret_reply_is_the_message_with_this_reads_freshness() -> None:
    secret = models.KvSecret(
        data=MappingProxyType({"password": "pw", "port": 5432, "nested": {"a": [1, "b"]}}),
        version=4,
        created_time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        custom_metadata=MappingProxyType({"owner": "billing"}),
    )
    confirmed = models.utcnow() - timedelta(seconds=2.5)
    encoded = convert.encoded_secret(secret)
    assert convert.encoded_secret(secret) is encoded  # once per object
    assert encoded.returned == {
        "data.password": "pw", "data.port": "5432", "data.nested": '{"a": [1, "b"]}',
    }  # fmt: skip
    for fresh in (
        models.Freshness(4, confirmed),
        models.Freshness(4, confirmed, stale=True, reachable=False),
    ):
        reply = secrets_pb2.GetSecretResponse.FromString(convert.secret_reply(encoded, fresh))
        expected = convert.kv_secret(secret, fresh)
        expected.freshness.age.CopyFrom(reply.freshness.age)  # the age moves on between calls
        assert reply == expected
        assert 2.5 <= reply.freshness.age.ToTimedelta().total_seconds() < 60
        assert reply.freshness.stale is fresh.stale
        assert reply.freshness.upstream == (
            common_pb2.UPSTREAM_STATE_CONNECTED
            if fresh.reachable
            else common_pb2.UPSTREAM_STATE_UNREACHABLE
        )
    before = len(convert.encoded_secret)
    del secret, encoded
    gc.collect()
    # Dropped with the cached object (entries of other objects that earlier tests left for the
    # collector may go in the same collection).
    assert len(convert.encoded_secret) <= before - 1


def test_credential_reply_is_the_serialized_response() -> None:
    now = models.utcnow()
    cred = models.Credential(
        role="app", username="v-app-1", password="pw", lease_id="database/creds/app/x",
        issued_at=now, expires_at=now + timedelta(minutes=5),
        max_ttl_deadline=now + timedelta(hours=1), renewable=True,
    )  # fmt: skip
    raw = convert.credential_reply(cred)
    assert convert.credential_reply(cred) is raw
    reply = secrets_pb2.GetDatabaseCredentialsResponse.FromString(raw)
    assert reply.credential.password == "pw"
    assert reply.credential.lease_expires_at.ToDatetime(UTC) == cred.expires_at


def test_timestamps_match_from_datetime() -> None:
    for value in (
        datetime(2025, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
        datetime(2025, 1, 2, 5, 4, 5, tzinfo=UTC).astimezone(),  # another zone
        datetime(2025, 1, 2, 3, 4, 5, 1),  # naive: taken as UTC
    ):
        expected = timestamp_pb2.Timestamp()
        expected.FromDatetime(value)
        assert convert.ts(value) == expected, value
