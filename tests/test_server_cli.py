"""`latchkey-server` commands, run as a user would: bad config fails fast, tokens are created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from latchkey_server.access.tokens import TokenStore


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "latchkey_server", *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def test_serve_with_bad_config_fails_fast_naming_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        "vault: {auth: {method: token, token: s3cr3t}}\nconsul: {max_connections: 9999}\n"
    )
    result = _run("serve", "--config", str(cfg))
    assert result.returncode == 2
    assert "consul.max_connections" in result.stderr
    assert "s3cr3t" not in result.stderr + result.stdout


def test_serve_without_any_authentication_says_what_to_do(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        'listen = "127.0.0.1:0"\ninsecure = true\n[vault.auth]\nmethod = "token"\ntoken = "t"\n'
    )
    result = _run("serve", "--config", str(cfg))
    assert result.returncode == 1
    assert "set auth.tokens_file" in result.stderr


def test_serve_is_tls_by_default(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("vault: {auth: {method: token, token: t}}\n")
    result = _run("serve", "--config", str(cfg))
    assert result.returncode == 2
    assert "TLS is on by default" in result.stderr


def test_token_create_prints_once_and_stores_hash(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    result = _run("token", "create", "--identity", "billing", "--tokens-file", str(tokens))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token not in tokens.read_text()
    assert TokenStore.load(tokens).identify(token) == "billing"


def test_dev_trace_file_turns_tracing_on_for_the_dev_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dev --trace-file` hands the tracing settings to the gateway process it starts (which
    inherits the environment); the stack itself is replaced here by a recorder."""
    from click.testing import CliRunner

    import latchkey_server.devstack.run as dev_run
    from latchkey_server.cli import main
    from latchkey_server.config import TracingSettings

    for name in ("ENABLED", "EXPORTER", "FILE"):
        monkeypatch.setenv(f"LATCHKEY_TRACING__{name}", "")  # restored after the test
        monkeypatch.delenv(f"LATCHKEY_TRACING__{name}")
    seen: list[TracingSettings] = []
    monkeypatch.setattr(
        dev_run, "run_dev", lambda state, policies: seen.append(TracingSettings.model_validate(
            {"enabled": os.environ["LATCHKEY_TRACING__ENABLED"],
             "exporter": os.environ["LATCHKEY_TRACING__EXPORTER"],
             "file": os.environ["LATCHKEY_TRACING__FILE"]}
        )),
    )  # fmt: skip
    trace_file = tmp_path / "traces.jsonl"
    result = CliRunner().invoke(
        main, ["dev", "--state-dir", str(tmp_path), "--trace-file", str(trace_file)]
    )
    assert result.exit_code == 0, result.output
    (settings,) = seen
    assert settings.enabled
    assert settings.exporter == "file"
    assert settings.file == trace_file
