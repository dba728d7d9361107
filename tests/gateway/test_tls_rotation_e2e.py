"""Certificate rotation without a restart, under open streams (real gateway, Consul, OpenBao,
PostgreSQL; certificates from the project's own `access/certs.py`).

The gateway's TLS files are symlinks into a `current` folder that the test swaps atomically (as
Kubernetes does with Secret volumes), so the watcher sees one consistent change. Checks:
- a Config.Watch and a credential stream opened before the rotation keep delivering after it
  (a config write arrives; the credential stream sends its next lease event) on the same call;
- a fresh TLS handshake (Python's ssl) gets the new certificate, and a client whose certificate
  comes from the new CA gets in; the SDK re-reads its rotated files for a new channel;
- a mismatched pair is refused: the previous certificate keeps serving, the refusal is counted
  in latchkey_tls_reloads_total{result="rejected"} and logged without key material.
Waits are on the reload metric, never on time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

import consul
import grpc
import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import latchkey
from latchkey.v1 import config_pb2, config_pb2_grpc, secrets_pb2, secrets_pb2_grpc
from latchkey_server.access.certs import init_ca, issue_client, issue_server
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.seed import READONLY_CREATION
from latchkey_server.server import Gateway
from tests.fixtures.gateway import gateway_settings, start_gateway
from tests.gateway.helpers import eventually

NAMES = ("server.crt", "server.key", "ca.crt")


def _authority(root: Path, name: str) -> Path:
    """A CA with a server certificate and a client certificate for identity `app`."""
    folder = root / name
    init_ca(folder)
    issue_server(folder)
    issue_client(folder, identity="app", out_name="client")
    return folder


def _publish(tls: Path, source: Path, *, key_from: Path | None = None) -> None:
    """Point tls/current at a new folder holding `source`'s server pair and CA (atomically)."""
    folder = tls / f"set-{source.name}-{(key_from or source).name}"
    folder.mkdir()
    shutil.copy(source / "server.crt", folder / "server.crt")
    shutil.copy((key_from or source) / "server.key", folder / "server.key")
    shutil.copy(source / "ca.crt", folder / "ca.crt")
    link = tls / "current.tmp"
    link.symlink_to(folder.name)
    os.replace(link, tls / "current")


def _peer_certificate(port: int, authority: Path) -> bytes:
    """DER of the certificate the gateway presents on a fresh handshake."""
    context = ssl.create_default_context(cafile=str(authority / "ca.crt"))
    context.load_cert_chain(str(authority / "client.crt"), str(authority / "client.key"))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def _channel(addr: str, authority: Path) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        (authority / "ca.crt").read_bytes(),
        (authority / "client.key").read_bytes(),
        (authority / "client.crt").read_bytes(),
    )
    return grpc.aio.secure_channel(addr, creds)


async def _next_event(stream: Any, kinds: set[str]) -> Any:
    while True:
        event = await stream.read()
        assert event is not grpc.aio.EOF, "the stream ended"
        if event.WhichOneof("event") in kinds:
            return event


async def test_certificates_rotate_under_open_streams(
    demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any,
    postgres: PostgresCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="latchkey.transport.tls")
    old, new = _authority(tmp_path, "ca-old"), _authority(tmp_path, "ca-new")
    tls = tmp_path / "tls"
    tls.mkdir()
    _publish(tls, old)
    for name in NAMES:
        (tls / name).symlink_to(Path("current") / name)
    role = f"tls-{os.urandom(4).hex()}"
    vault = hvac.Client(url=vault_server.addr, token=vault_server.root_token)
    vault.secrets.database.create_role(
        name=role, db_name="demo", creation_statements=READONLY_CREATION,
        default_ttl="3s", max_ttl="600s",
    )  # fmt: skip
    kv = consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv
    prefix = f"tlsrot/{os.urandom(4).hex()}/"
    kv.put(prefix + "a", "1")
    handle = await start_gateway(
        demo_env, consul_agent, vault_server, postgres, insecure=False,
        tls={"cert_file": str(tls / "server.crt"), "key_file": str(tls / "server.key"),
             "client_ca_file": str(tls / "ca.crt"), "reload_interval": 0.1},
    )  # fmt: skip
    port = int(handle.addr.rsplit(":", 1)[1])
    registry = handle.gateway.components.telemetry.registry

    def reloads(result: str) -> float:
        value = registry.get_sample_value("latchkey_tls_reloads_total", {"result": result})
        return value or 0.0

    try:
        assert await asyncio.to_thread(_peer_certificate, port, old) == _der(old / "server.crt")
        async with _channel(handle.addr, old) as channel:
            watch = config_pb2_grpc.ConfigStub(channel).Watch(
                config_pb2.WatchConfigRequest(prefix=prefix)
            )
            creds = secrets_pb2_grpc.SecretsStub(channel).WatchDatabaseCredentials(
                secrets_pb2.WatchDatabaseCredentialsRequest(role=role)
            )
            assert (await _next_event(watch, {"snapshot"})).snapshot.entries
            assert (await _next_event(creds, {"issued"})).issued.credential.username

            # Rotate the server certificate and the client CA: new pair, new CA.
            _publish(tls, new)
            await eventually(lambda: reloads("ok") == 1, what="the TLS reload to be counted")
            assert reloads("rejected") == 0
            fresh = await asyncio.to_thread(_peer_certificate, port, new)
            assert fresh == _der(new / "server.crt")

            # The streams opened before the rotation carry on, on the same calls.
            kv.put(prefix + "b", "2")
            change = await _next_event(watch, {"change"})
            assert [c.key for c in change.change.changes] == [prefix + "b"]
            assert await _next_event(creds, {"renewed", "rotation"})

            # A client of the new CA gets in over a new connection.
            async with _channel(handle.addr, new) as fresh_channel:
                got = await config_pb2_grpc.ConfigStub(fresh_channel).Get(
                    config_pb2.GetConfigRequest(key=prefix + "b")
                )
                assert got.entry.value == b"2"

            # The SDK re-reads its files: made with the old CA's files, which are then
            # replaced by the new CA's, its first channel uses the new ones.
            client_dir = tmp_path / "client"
            client_dir.mkdir()
            for name in ("ca.crt", "client.crt", "client.key"):
                shutil.copy(old / name, client_dir / name)
            async with latchkey.AsyncClient(
                handle.addr, cacert=client_dir / "ca.crt", client_cert=client_dir / "client.crt",
                client_key=client_dir / "client.key", retry_deadline=2.0,
            ) as client:  # fmt: skip
                for name in ("ca.crt", "client.crt", "client.key"):
                    shutil.copy(new / name, client_dir / f"{name}.tmp")
                    os.replace(client_dir / f"{name}.tmp", client_dir / name)
                assert (await client.config.get(prefix + "b")).value == b"2"

            # A mismatched pair (the new certificate with the old key) is refused.
            _publish(tls, new, key_from=old)
            await eventually(lambda: reloads("rejected") == 1, what="the refusal to be counted")
            assert reloads("ok") == 1
            assert await asyncio.to_thread(_peer_certificate, port, new) == _der(new / "server.crt")
            kv.put(prefix + "c", "3")
            change = await _next_event(watch, {"change"})
            assert [c.key for c in change.change.changes] == [prefix + "c"]
            watch.cancel()
            creds.cancel()
    finally:
        await handle.gateway.stop()
    refusals = [r.getMessage() for r in caplog.records if "TLS reload refused" in r.getMessage()]
    assert refusals
    assert "does not match" in refusals[0]
    for authority in (old, new):
        key = (authority / "server.key").read_text()
        body = "".join(key.splitlines()[1:-1])
        assert body[:40] not in caplog.text


async def test_sighup_reloads_the_certificate(
    demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any, tmp_path: Path
) -> None:
    """The real signal, delivered to a gateway run by `serve()` (which installs the handlers);
    files are not polled in between (an hour's interval), so only SIGHUP can reload them."""
    old, new = _authority(tmp_path, "ca-old"), _authority(tmp_path, "ca-new")
    tls = tmp_path / "tls"
    tls.mkdir()
    _publish(tls, old)
    for name in NAMES:
        (tls / name).symlink_to(Path("current") / name)
    settings = gateway_settings(
        consul_addr=consul_agent.http_addr, vault_addr=vault_server.addr,
        role_id=demo_env["approle"].role_id, secret_id=demo_env["approle"].secret_id,
        tokens_file=demo_env["tokens_file"], policies_dir=demo_env["policies_dir"],
        audit_file=demo_env["audit_file"], insecure=False,
        tls={"cert_file": str(tls / "server.crt"), "key_file": str(tls / "server.key"),
             "client_ca_file": str(tls / "ca.crt"), "reload_interval": 3600},
    )  # fmt: skip
    gateway = Gateway(settings)
    listening: asyncio.Queue[str] = asyncio.Queue()
    serving = asyncio.create_task(gateway.serve(announce=listening.put_nowait))
    try:
        port = int((await asyncio.wait_for(listening.get(), 60)).rsplit(":", 1)[1])
        registry = gateway.components.telemetry.registry

        def reloaded() -> bool:
            value = registry.get_sample_value("latchkey_tls_reloads_total", {"result": "ok"})
            return value == 1

        _publish(tls, new)
        assert not reloaded()
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(reloaded, what="SIGHUP to reload the TLS files")
        fresh = await asyncio.to_thread(_peer_certificate, port, new)
        assert fresh == _der(new / "server.crt")
    finally:
        gateway.request_stop("test over")
        await serving
