"""The gateway's side of a seeded demo: its config file and the dev token.

One source for `make dev` (`devstack/run.py`) and the compose bootstrap
(`devstack/bootstrap.py`), so both stacks hand the gateway the same shape of configuration.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from latchkey_server.access.tokens import append_token, generate_token
from latchkey_server.devstack.seed import AppRoleCredentials

DEV_IDENTITY = "dev"


@dataclass(frozen=True)
class TlsFiles:
    """Server TLS for a demo gateway (see `latchkey-server certs`)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    require_client_cert: bool = True
    """False: client certificates are not requested (TLS with bearer tokens only)."""


@dataclass(frozen=True)
class GatewayConfig:
    """What a demo gateway needs to know; rendered into the YAML `serve --config` reads."""

    listen: str
    """gRPC listen address, host:port."""
    vault_addr: str
    """Vault as the gateway reaches it."""
    approle: AppRoleCredentials
    """The gateway's AppRole (from `seed_vault`)."""
    consul_addr: str
    """Consul agent HTTP address, host:port."""
    tokens_file: Path
    """The hashed bearer tokens file."""
    policies_dir: Path | None = None
    """Access policies (HCL) and bindings; None denies everything."""
    tls: TlsFiles | None = None
    """Server TLS; None serves plaintext (`insecure`), for loopback only."""
    audit_sink: str = "stdout"
    """Audit log destination: stdout, stderr or a file path."""
    audit_key_file: Path | None = None
    """HMAC key for returned secret values in the audit log."""
    metrics_listen: str = "127.0.0.1:9464"
    """Prometheus /metrics listener."""

    def as_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "listen": self.listen,
            "vault": {
                "addr": self.vault_addr,
                "auth": {
                    "method": "approle",
                    "role_id": self.approle.role_id,
                    "secret_id": self.approle.secret_id,
                },
            },
            "consul": {"addr": self.consul_addr},
            "auth": {"tokens_file": str(self.tokens_file)},
            "audit": {"sink": self.audit_sink},
            "metrics": {"listen": self.metrics_listen},
        }
        if self.policies_dir is not None:
            config["auth"]["policies_dir"] = str(self.policies_dir)
        if self.audit_key_file is not None:
            config["audit"]["hmac_key_file"] = str(self.audit_key_file)
        if self.tls is None:
            config["insecure"] = True
        else:
            tls: dict[str, Any] = {
                "cert_file": str(self.tls.cert_file),
                "key_file": str(self.tls.key_file),
            }
            if self.tls.client_ca_file is not None:
                tls["client_ca_file"] = str(self.tls.client_ca_file)
                tls["require_client_cert"] = self.tls.require_client_cert
            config["tls"] = tls
        return config


def write_gateway_config(path: Path, config: GatewayConfig) -> None:
    """Write the config atomically, readable only by the owner (it holds the AppRole secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config.as_dict(), fh, sort_keys=False)
    tmp.replace(path)


def write_audit_key(path: Path) -> Path:
    """Create a random 32-byte audit HMAC key (hex, 0600) unless one exists; return its path."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    return path


def issue_dev_token(tokens_file: Path, identity: str = DEV_IDENTITY) -> str:
    """Start a fresh tokens file holding one token for `identity`; return the token."""
    tokens_file.unlink(missing_ok=True)
    token = generate_token()
    append_token(tokens_file, identity, token)
    return token
