"""OpenBao Proxy (`bao proxy`) in front of the bench's OpenBao: the peer a Vault user deploys
instead of latchkey.

Configured as its documentation describes for caching: auto-auth with AppRole (the gateway's
role, a secret id of its own) and a file sink, a `cache {}` stanza, `api_proxy {
use_auto_auth_token = true }` so callers send no token, and a plaintext TCP listener. With the
cache, a leased secret (`database/creds/<role>`) requested with the auto-auth token is created
once and served again from the proxy's memory (renewed by the proxy) until it can no longer be
renewed; a KV v2 read is not leased, so the proxy forwards every one to OpenBao.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import hvac

from latchkey_server.devstack.openbao import find_bao
from latchkey_server.devstack.ports import free_ports
from latchkey_server.devstack.process import ManagedProcess
from latchkey_server.devstack.seed import GATEWAY_APPROLE

CONFIG = """\
pid_file = "{workdir}/proxy.pid"

vault {{
  address = "{vault_addr}"
}}

auto_auth {{
  method "approle" {{
    mount_path = "auth/approle"
    config = {{
      role_id_file_path                   = "{workdir}/role_id"
      secret_id_file_path                 = "{workdir}/secret_id"
      remove_secret_id_file_after_reading = false
    }}
  }}
  sink "file" {{
    config = {{
      path = "{workdir}/token"
    }}
  }}
}}

cache {{}}

api_proxy {{
  use_auto_auth_token = true
}}

listener "tcp" {{
  address     = "{listen}"
  tls_disable = true
}}
"""


def get_json(url: str) -> tuple[int, dict[str, object]]:
    """GET `url` (no token: the proxy adds its own); (status, decoded body or {})."""
    request = urllib.request.Request(url, headers={"X-Vault-Request": "true"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 (loopback)
            return int(resp.status), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (urllib.error.URLError, OSError):
        return 0, {}


@dataclass
class OpenBaoProxy:
    """One `bao proxy` process (start, wait until auto-auth is done, stop)."""

    workdir: Path
    vault_addr: str
    root_token: str
    addr: str = ""
    process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def start(self, probe_path: str) -> None:
        """Start and wait until `probe_path` (e.g. a KV read) answers 200 through the proxy."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        client = hvac.Client(url=self.vault_addr, token=self.root_token)
        role_id = client.auth.approle.read_role_id(GATEWAY_APPROLE)["data"]["role_id"]
        secret_id = client.auth.approle.generate_secret_id(GATEWAY_APPROLE)["data"]["secret_id"]
        for name, value in (("role_id", role_id), ("secret_id", secret_id)):
            path = self.workdir / name
            path.write_text(value)
            path.chmod(0o600)
        (port,) = free_ports(1)
        self.addr = f"127.0.0.1:{port}"
        config = self.workdir / "proxy.hcl"
        config.write_text(
            CONFIG.format(workdir=self.workdir, vault_addr=self.vault_addr, listen=self.addr)
        )
        self.process = ManagedProcess(
            "OpenBao Proxy",
            [find_bao(), "proxy", f"-config={config}"],
            self.workdir / "proxy.log",
        )
        self.process.start()
        self.process.wait_ready(lambda: get_json(self.url + probe_path)[0] == 200, 60)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)
