"""A TLS gateway with its own CA, certificates and policy folder, for access tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import consul
import grpc

from latchkey_server.access.certs import CertPaths, init_ca, issue_client, issue_server
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from tests.fixtures.gateway import GatewayHandle, start_gateway

APP_POLICY = """
secret   "secret/data/billing/*"    { capabilities = ["read"] }
secret   "secret/data/billing/root" { capabilities = ["deny"] }
database "demo-*"                   { capabilities = ["read", "watch", "renew", "revoke"] }
config   "billing/"                 { capabilities = ["read", "watch"] }
config   "billing/private"          { capabilities = ["deny"] }
service  "web"                      { capabilities = ["discover"] }
service  "billing"                  { capabilities = ["register"] }
"""
OPERATOR_POLICY = """
database "*" { capabilities = ["list_leases", "renew", "revoke", "revoke_any"] }
gateway "*"  { capabilities = ["status"] }
"""
BINDINGS = """
binding "spiffe://example.org/billing" { policies = ["app"] }
binding "operator"                     { policies = ["operator"] }
"""
IDENTITIES = ("spiffe://example.org/billing", "operator", "stranger")


@dataclass
class TlsGateway:
    handle: GatewayHandle
    tls_dir: Path
    policies_dir: Path
    audit_file: Path
    client_certs: dict[str, CertPaths]

    def channel(self, identity: str | None, *, ca_dir: Path | None = None) -> grpc.aio.Channel:
        ca = ((ca_dir or self.tls_dir) / "ca.crt").read_bytes()
        if identity is None:
            creds = grpc.ssl_channel_credentials(root_certificates=ca)
        else:
            cert = self.client_certs[identity]
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=cert.key.read_bytes(),
                certificate_chain=cert.cert.read_bytes(),
            )
        return grpc.aio.secure_channel(self.handle.addr.replace("127.0.0.1", "localhost"), creds)


def write_policies(directory: Path, app: str = APP_POLICY) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.hcl").write_text(app)
    (directory / "operator.hcl").write_text(OPERATOR_POLICY)
    (directory / "bindings.hcl").write_text(BINDINGS)


async def start_tls_gateway(
    base: Path, demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any,
    postgres: PostgresCluster, *, require_client_cert: bool = True, **overrides: Any,
) -> TlsGateway:  # fmt: skip
    # The policies name service `web`; a read of a service Consul does not know is NOT_FOUND.
    # The instance is critical, so it stays out of every healthy set other tests read.
    consul.Consul(host="127.0.0.1", port=consul_agent.http_port).agent.service.register(
        "web", service_id="web-access", address="127.0.0.1", port=8080,
        check={"CheckID": "web-access-ttl", "TTL": "87600h", "Status": "critical"},
    )  # fmt: skip
    tls_dir = base / "tls"
    init_ca(tls_dir)
    server = issue_server(tls_dir)
    certs = {who: issue_client(tls_dir, identity=who) for who in IDENTITIES}
    policies = base / "policies"
    write_policies(policies)
    audit_file = base / "audit.log"
    tls: dict[str, Any] = {"cert_file": str(server.cert), "key_file": str(server.key)}
    if require_client_cert:
        tls["client_ca_file"] = str(tls_dir / "ca.crt")
    else:
        tls["require_client_cert"] = False
    auth = {"policies_dir": str(policies), "reload_interval": 0.2, **overrides.pop("auth", {})}
    handle = await start_gateway(
        demo_env, consul_agent, vault_server, postgres, insecure=False, tls=tls, auth=auth,
        audit={"sink": str(audit_file)}, **overrides,
    )  # fmt: skip
    return TlsGateway(handle, tls_dir, policies, audit_file, certs)
