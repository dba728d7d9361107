"""The SDK's shape: public surface, one room for grpc, sync generated from async, settings."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

import latchkey
from latchkey._errors import LatchkeyError, StatusCode
from latchkey._grpc import translate
from latchkey._settings import Endpoint, resolve_settings

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "clients" / "python" / "src" / "latchkey"


def test_all_is_sorted_and_exactly_the_public_names() -> None:
    assert latchkey.__all__ == sorted(latchkey.__all__)
    public = {n for n in vars(latchkey) if not n.startswith("_")} - {
        "v1",
        "cli",
        "integrations",
        "openfeature",
    }
    assert set(latchkey.__all__) == public
    assert (PKG / "py.typed").exists()


def test_grpc_and_protobuf_stay_at_the_edges() -> None:
    allowed = {
        "grpc": {"_grpc.py", "_async/_transport.py", "_sync/_transport.py"},
        "latchkey.v1": {
            "_convert.py", "_streams.py", "_async/_transport.py", "_sync/_transport.py",
            "_async/_secrets.py", "_sync/_secrets.py", "_async/_config.py", "_sync/_config.py",
            "_async/_services.py", "_sync/_services.py",
        },
        "google.protobuf": {"_convert.py"},
    }  # fmt: skip
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith("v1/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                for lib, rooms in allowed.items():
                    if (name == lib or name.startswith(lib + ".")) and rel not in rooms:
                        offenders.append(f"{rel} imports {name}")
    assert offenders == []


def test_sync_client_is_in_step_with_async() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_unasync_rewrites_tokens_not_text() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import unasync
    finally:
        sys.path.pop(0)
    src = (
        "async def f(x: AsyncFoo, awaiting: int) -> None:\n"
        '    """Use an AsyncClient."""\n'
        "    async with x:\n"
        "        await x.aclose()\n"
    )
    assert unasync.unasync(src) == (
        "def f(x: Foo, awaiting: int) -> None:\n"
        '    """Use an Client."""\n'
        "    with x:\n"
        "        x.close()\n"
    )


def test_settings_precedence_and_parsing(tmp_path: Path) -> None:
    env = {"LATCHKEY_ADDR": "a:1,https://b:2", "LATCHKEY_TOKEN": "from-env"}
    s = resolve_settings(environ=env)
    assert s.endpoints == (Endpoint("a:1", tls=False), Endpoint("b:2", tls=True))
    assert s.token == "from-env"
    assert "from-env" not in repr(s)
    explicit = resolve_settings("c:3", token="explicit", environ=env)
    assert explicit.endpoints == (Endpoint("c:3", tls=False),)
    assert explicit.token == "explicit"
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n(only the marker is checked)\n")
    tls = resolve_settings(["d:4", "http://e:5"], cacert=ca, environ={})
    assert [e.tls for e in tls.endpoints] == [True, False]
    assert not resolve_settings("d:4", cacert=ca, insecure=True, environ={}).endpoints[0].tls
    with pytest.raises(latchkey.ConfigurationError, match="LATCHKEY_ADDR"):
        resolve_settings(environ={})
    with pytest.raises(latchkey.ConfigurationError, match="LATCHKEY_CLIENT_KEY"):
        resolve_settings("a:1", client_cert=ca, environ={})
    with pytest.raises(latchkey.ConfigurationError, match="cannot read"):
        resolve_settings("a:1", cacert=tmp_path / "missing.pem", environ={})
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(latchkey.ConfigurationError, match=r"junk.pem' \(LATCHKEY_CACERT\) is not"):
        resolve_settings("a:1", cacert=tmp_path / "junk.pem", environ={})
    with pytest.raises(latchkey.ConfigurationError, match="LATCHKEY_DEV_PID must be a process"):
        resolve_settings("a:1", environ={"LATCHKEY_DEV_PID": "x"})
    assert resolve_settings("a:1", environ={"LATCHKEY_DEV_PID": "42"}).dev_pid == 42


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers=()) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return self._trailers


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.NOT_FOUND, latchkey.NotFound),
        (grpc.StatusCode.PERMISSION_DENIED, latchkey.PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, latchkey.Unauthenticated),
        (grpc.StatusCode.UNAVAILABLE, latchkey.Unavailable),
        (grpc.StatusCode.INVALID_ARGUMENT, latchkey.InvalidArgument),
        (grpc.StatusCode.DEADLINE_EXCEEDED, latchkey.DeadlineExceeded),
        (grpc.StatusCode.DATA_LOSS, latchkey.Internal),
    ],
)
def test_one_mapping_from_grpc_codes(code: grpc.StatusCode, cls: type[LatchkeyError]) -> None:
    error = translate(FakeRpcError(code, "what happened", (("retry-after", "2"),)))
    assert type(error) is cls
    assert error.message == "what happened"
    assert error.retry_after == 2.0
    if cls is not latchkey.Internal:
        assert cls.code is StatusCode[code.name]
    assert isinstance(error.__cause__, grpc.RpcError)
    assert not isinstance(error, grpc.RpcError)
