"""The audit log: one ordered JSON line per record, secrets only as HMACs, fail-closed writes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from latchkey_server.access.audit import (
    FIELDS,
    UNAVAILABLE_MESSAGE,
    AuditLog,
    AuditRecord,
    AuditUnavailable,
    format_time,
    hash_value,
    load_key,
)
from latchkey_server.errors import InvalidArgument, Status, Unavailable

KEY = b"k" * 32
SECRET = "hunter2-the-plain-password"


def _record(**overrides: object) -> AuditRecord:
    values: dict[str, object] = {
        "time": datetime(2025, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC),
        "request_id": "req-1",
        "trace_id": "",
        "identity": "billing",
        "auth_method": "token",
        "peer": "ipv4:10.0.0.7:51234",
        "rpc": "/latchkey.v1.Secrets/GetSecret",
        "resource": "secret/data/billing/db",
        "kind": "secret",
        "capability": "read",
        "decision": "allow",
        "code": "OK",
        "latency_ms": 1.25,
        "returned": {"password": SECRET, "username": "app"},
    }
    values.update(overrides)
    return AuditRecord(**values)  # type: ignore[arg-type]


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _mac(value: str, key: bytes = KEY) -> str:
    return "hmac-sha256:" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def test_line_shape_and_key_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog(path, KEY) as audit:
        audit.write(_record())
        audit.write(_record(event="stream_end", decision="n/a", returned={}, detail="closed"))
    raw = path.read_text()
    assert raw.endswith("\n")
    assert raw.count("\n") == 2
    first, second = _lines(path)
    assert list(first) == list(FIELDS)
    assert list(FIELDS) == [
        "time", "request_id", "trace_id", "identity", "auth_method", "peer", "rpc", "resource",
        "kind", "capability", "decision", "code", "latency_ms", "event", "returned", "detail",
    ]  # fmt: skip
    assert first == {
        "time": "2025-01-02T03:04:05.678Z",
        "request_id": "req-1",
        "trace_id": "",
        "identity": "billing",
        "auth_method": "token",
        "peer": "ipv4:10.0.0.7:51234",
        "rpc": "/latchkey.v1.Secrets/GetSecret",
        "resource": "secret/data/billing/db",
        "kind": "secret",
        "capability": "read",
        "decision": "allow",
        "code": "OK",
        "latency_ms": 1.25,
        "event": "request",
        "returned": {"password": _mac(SECRET), "username": _mac("app")},
        "detail": "",
    }
    assert list(second) == list(FIELDS)
    assert second["returned"] == {}
    assert second["event"] == "stream_end"
    assert second["detail"] == "closed"


def test_time_is_rfc3339_utc_with_milliseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_time(datetime(2025, 1, 2, 5, 4, 5, 9_999, tzinfo=plus_two)) == (
        "2025-01-02T03:04:05.009Z"
    )
    assert format_time(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2025-01-02T03:04:05.000Z"
    record = _record(time=datetime(2025, 1, 2, 5, 4, 5, tzinfo=plus_two))
    assert record.time.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        _record(time=datetime(2025, 1, 2))


def test_record_rejects_unknown_decision_and_event_and_cuts_detail() -> None:
    with pytest.raises(ValueError, match="decision"):
        _record(decision="maybe")
    with pytest.raises(ValueError, match="event"):
        _record(event="stream_middle")
    with pytest.raises(ValueError, match="finite"):
        _record(latency_ms=float("nan"))
    assert len(_record(detail="x" * 1000).detail) == 200
    assert SECRET not in repr(_record())


def test_hmac_matches_hmac_new(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log", KEY)
    for value in (SECRET, "", "ünïcødé ☃", "line\nbreak"):
        expected = hmac.new(KEY, value.encode("utf-8"), hashlib.sha256).hexdigest()
        assert audit.hash_value(value) == f"hmac-sha256:{expected}"
        assert hash_value(value, KEY) == f"hmac-sha256:{expected}"
    assert hash_value(SECRET, b"x" * 32) != hash_value(SECRET, KEY)
    audit.close()


def test_plain_secret_never_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog(path, KEY) as audit:
        audit.write(_record(returned={"password": SECRET, "token": "s.vault-token-value"}))
    text = path.read_bytes()
    assert SECRET.encode() not in text
    assert b"vault-token-value" not in text
    assert _mac(SECRET).encode() in text


def test_file_created_0600_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    old_umask = os.umask(0)
    try:
        audit = AuditLog(path, KEY)
    finally:
        os.umask(old_umask)
    audit.write(_record(request_id="one"))
    audit.close()
    assert path.stat().st_mode & 0o777 == 0o600
    with AuditLog(path, KEY) as again:
        again.write(_record(request_id="two"))
    assert [line["request_id"] for line in _lines(path)] == ["one", "two"]


def test_unopenable_sink_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot be opened"):
        AuditLog(tmp_path / "missing-dir" / "audit.log", KEY)


def test_full_disk_raises_audit_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog("/dev/full", KEY)
    assert audit.healthy
    with caplog.at_level(logging.DEBUG, logger="latchkey.access.audit"):
        with pytest.raises(AuditUnavailable) as err:
            audit.write(_record())
        with pytest.raises(AuditUnavailable):
            audit.write(_record())
    assert isinstance(err.value, Unavailable)
    assert err.value.status is Status.UNAVAILABLE
    assert err.value.message == UNAVAILABLE_MESSAGE
    assert str(err.value) == (
        "the audit log cannot be written; secret-returning calls are refused until it can"
    )
    assert "/dev" not in str(err.value)
    assert audit.failures == 2
    assert not audit.healthy
    assert "/dev/full" in caplog.text  # the operator learns which sink
    assert SECRET not in caplog.text
    assert _mac(SECRET) not in caplog.text
    audit.close()


def test_write_after_close_raises_and_counts(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log", KEY)
    audit.write(_record())
    audit.close()
    audit.close()  # idempotent
    assert not audit.healthy
    with pytest.raises(AuditUnavailable):
        audit.write(_record())
    assert audit.failures == 1


def test_closed_stream_raises_and_recovery_restores_health(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = AuditLog("stdout", KEY)
    broken = io.StringIO()
    broken.close()
    monkeypatch.setattr("sys.stdout", broken)
    with pytest.raises(AuditUnavailable):
        audit.write(_record())
    assert audit.failures == 1
    assert not audit.healthy
    monkeypatch.undo()
    audit.write(_record(request_id="after"))
    assert audit.healthy
    assert audit.failures == 1
    assert json.loads(capsys.readouterr().out)["request_id"] == "after"


def test_fail_closed_rule() -> None:
    closed = AuditLog("/dev/full", KEY)
    assert closed.must_succeed(True)
    assert not closed.must_succeed(False)
    with pytest.raises(AuditUnavailable):
        closed.emit(_record(), returns_secret=True)
    assert closed.emit(_record(decision="deny", returned={}), returns_secret=False) is False
    assert closed.failures == 2

    open_ = AuditLog("/dev/full", KEY, fail_closed=False)
    assert not open_.must_succeed(True)
    assert open_.emit(_record(), returns_secret=True) is False
    assert open_.failures == 1
    with pytest.raises(AuditUnavailable):
        open_.write(_record())  # `write` itself always raises
    closed.close()
    open_.close()


def test_emit_returns_true_when_written(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.log", KEY) as audit:
        assert audit.emit(_record(), returns_secret=True) is True
        assert audit.failures == 0


async def test_concurrent_tasks_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path, KEY)
    big = "v" * 5000

    async def writer(task: int) -> None:
        for n in range(20):
            audit.write(_record(request_id=f"{task}-{n}", returned={"blob": big}))
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(t) for t in range(25)))
    audit.close()
    lines = _lines(path)
    assert len(lines) == 500
    assert {line["request_id"] for line in lines} == {
        f"{t}-{n}" for t in range(25) for n in range(20)
    }


def test_concurrent_threads_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path, KEY)
    detail = "d" * 150

    def writer(thread: int) -> None:
        for n in range(50):
            audit.write(_record(request_id=f"{thread}-{n}", detail=detail))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    audit.close()
    lines = _lines(path)
    assert len(lines) == 800
    assert all(list(line) == list(FIELDS) for line in lines)
    assert len({line["request_id"] for line in lines}) == 800


def test_stdout_sink(capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog("stdout", KEY)
    audit.write(_record())
    audit.close()
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.count("\n") == 1
    line = json.loads(captured.out)
    assert list(line) == list(FIELDS)
    assert line["returned"]["password"] == _mac(SECRET)
    assert SECRET not in captured.out


def test_stderr_sink(capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog("stderr", KEY)
    audit.write(_record())
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err)["rpc"] == "/latchkey.v1.Secrets/GetSecret"


def test_missing_key_generates_one_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="latchkey.access.audit"):
        first = AuditLog(tmp_path / "a.log")
        second = AuditLog(tmp_path / "b.log")
    assert "not be comparable across restarts" in caplog.text
    assert first.hash_value(SECRET) != second.hash_value(SECRET)
    first.close()
    second.close()


def test_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="at least 16 bytes"):
        AuditLog(tmp_path / "audit.log", b"short")


def test_load_key_reads_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    path.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    key = load_key(path)
    assert key == b"0123456789abcdef0123456789abcdef"
    assert AuditLog("stderr", key).hash_value(SECRET) == _mac(SECRET, key)
    path.write_bytes(b"short\n")
    with pytest.raises(InvalidArgument, match="at least 16 bytes"):
        load_key(path)
    with pytest.raises(InvalidArgument, match="cannot be read"):
        load_key(tmp_path / "missing.key")


def test_line_is_what_json_dumps_writes(tmp_path: Path) -> None:
    """The hand-built line equals json.dumps of the same document, for awkward strings too."""
    audit = AuditLog(tmp_path / "audit.log", KEY)
    awkward = 'quote" back\\slash /slash \n\t\x00\x1f ünï ☃ \ud800 🎉'
    record = _record(
        request_id=awkward, identity=awkward, peer=awkward, rpc=awkward, resource=awkward,
        kind=awkward, capability=awkward, code=awkward, detail=awkward[:100],
        returned={awkward: "v", "plain": SECRET}, latency_ms=12.3456789,
    )  # fmt: skip
    document = {
        "time": "2025-01-02T03:04:05.678Z",
        "request_id": awkward,
        "trace_id": "",
        "identity": awkward,
        "auth_method": "token",
        "peer": awkward,
        "rpc": awkward,
        "resource": awkward,
        "kind": awkward,
        "capability": awkward,
        "decision": "allow",
        "code": awkward,
        "latency_ms": 12.346,
        "event": "request",
        "returned": {"plain": _mac(SECRET), awkward: audit.hash_value("v")},
        "detail": awkward[:100],
    }
    expected = json.dumps(document, ensure_ascii=True, separators=(",", ":")) + "\n"
    assert audit.format_line(record) == expected
    assert audit.format_line(_record(latency_ms=2)).count('"latency_ms":2,') == 1
    audit.close()


async def test_submit_to_a_file_writes_secret_lines_at_once_and_others_per_iteration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path, KEY)
    assert audit._writer is None  # a regular file is written on the event loop
    for n in range(3):
        assert audit.submit(_record(request_id=f"q-{n}", returned={}), returns_secret=False) is None
    assert not path.read_text()  # queued until the end of this loop iteration...
    # ...unless a secret-returning call needs its line: written now, after those queued before.
    assert audit.submit(_record(request_id="secret"), returns_secret=True) is None
    assert [line["request_id"] for line in _lines(path)] == ["q-0", "q-1", "q-2", "secret"]
    assert audit.submit(_record(request_id="late", returned={}), returns_secret=False) is None
    await asyncio.sleep(0)  # the loop iteration ends: one write for what it queued
    assert _lines(path)[-1]["request_id"] == "late"
    audit.close()
    assert audit.failures == 0


async def test_submit_fails_closed_on_a_full_disk(caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog("/dev/full", KEY)
    with caplog.at_level(logging.ERROR, logger="latchkey.access.audit"):
        secret = audit.submit(_record(), returns_secret=True)
        quiet = audit.submit(_record(decision="deny", returned={}), returns_secret=False)
        assert secret is not None
        assert quiet is None
        with pytest.raises(AuditUnavailable) as err:
            await secret
    assert err.value.message == UNAVAILABLE_MESSAGE
    assert audit.failures == 2  # both lines of the batch
    assert not audit.healthy
    assert "/dev/full" in caplog.text
    assert SECRET not in caplog.text
    open_ = AuditLog("/dev/full", KEY, fail_closed=False)
    assert open_.submit(_record(), returns_secret=True) is None  # not fail-closed: no wait
    open_.close()
    assert open_.failures == 1
    audit.close()


async def test_submit_after_close_fails_closed(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log", KEY)
    audit.close()
    with pytest.raises(AuditUnavailable):
        audit.submit(_record(), returns_secret=True)
    assert audit.failures == 1
    thread = AuditLog("stdout", KEY)
    thread.close()
    waiter = thread.submit(_record(), returns_secret=True)
    assert waiter is not None
    with pytest.raises(AuditUnavailable):
        await waiter
    assert thread.failures == 1


async def test_submit_to_stdout_goes_through_the_writer_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    audit = AuditLog("stdout", KEY)
    assert audit._writer is not None  # a sink that can block: never written on the event loop
    waiters = [audit.submit(_record(request_id=f"o-{n}"), returns_secret=True) for n in range(5)]
    await asyncio.gather(*(w for w in waiters if w is not None))
    audit.close()
    out = capsys.readouterr().out
    assert [json.loads(line)["request_id"] for line in out.splitlines()] == [
        f"o-{n}" for n in range(5)
    ]
    assert SECRET not in out


def test_a_regular_file_that_cannot_grow_fails_secret_calls(tmp_path: Path) -> None:
    """A real failed write to a regular file (the file-size limit: EFBIG), in a child process
    so that the limit touches nothing else."""
    script = f"""
import asyncio, resource
from datetime import UTC, datetime
from latchkey_server.access.audit import AuditLog, AuditRecord, AuditUnavailable

def record():
    return AuditRecord(time=datetime.now(UTC), request_id="r", identity="i", auth_method="token",
        peer="p", rpc="/x/Y", resource="r", kind="secret", capability="read", decision="allow",
        code="OK", latency_ms=1.0, returned={{"password": "{SECRET}"}})

async def main():
    audit = AuditLog({str(tmp_path / "audit.log")!r}, b"k" * 32)
    assert audit._writer is None  # a regular file is written on the event loop
    assert audit.submit(record(), returns_secret=True) is None
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
    try:
        audit.submit(record(), returns_secret=True)
    except AuditUnavailable as exc:
        print("refused:", exc.message, audit.failures)
    quiet = audit.submit(record(), returns_secret=False)
    assert quiet is None
    await asyncio.sleep(0)
    print("failures", audit.failures)

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f"refused: {UNAVAILABLE_MESSAGE} 1" in done.stdout
    assert "failures 2" in done.stdout
    assert SECRET not in done.stderr
    assert (tmp_path / "audit.log").read_text().count("\n") == 1
