"""Settings: file values, environment overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from latchkey_server.config import load_settings
from latchkey_server.errors import InvalidArgument


def test_yaml_file_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        "listen: 127.0.0.1:9999\ninsecure: true\n"
        "vault:\n  auth: {method: token, token: s3cr3t-value}\nconsul:\n  wait: 30\n"
    )
    monkeypatch.setenv("LATCHKEY_CONSUL__WAIT", "20")
    settings = load_settings(cfg)
    assert settings.listen == "127.0.0.1:9999"
    assert settings.consul.wait == 20
    assert settings.vault.auth.token is not None
    assert "s3cr3t-value" not in repr(settings)


def test_toml_file(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        'listen = "127.0.0.1:1"\ninsecure = true\n'
        '[vault.auth]\nmethod = "approle"\nrole_id = "r"\nsecret_id = "s"\n'
    )
    assert load_settings(cfg).vault.auth.role_id == "r"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            "vault: {auth: {method: token, token: t}}\nconsul: {max_connections: 500}\n",
            "consul.max_connections",
        ),
        ("vault: {auth: {method: token, token: t}}\n", "TLS is on by default"),
        ("vault: {auth: {method: token, token: t}}\ntls: {cert_file: /c}\n", "tls.key_file"),
        ("vault: {auth: {method: token, token: t}}\nbogus: 1\n", "bogus"),
        ("vault: {approle_role_id: r}\n", "vault"),
        ("vault: {auth: {method: approle, role_id: r}}\n", "vault.auth.secret_id"),
        (
            "vault: {auth: {method: jwt, role: r, jwt_file: /t, secret_id: s}}\n",
            "vault.auth.secret_id does not apply",
        ),
        ("vault: {auth: {method: token, token: t, token_file: /t}}\n", "only one of"),
        ("vault: {auth: {method: ldap}}\n", "vault.auth.method"),
        ("{}\n", "vault"),
    ],
)
def test_bad_config_fails_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(text)
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        load_settings(cfg)


def test_unparseable_file(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("listen: [unclosed\n")
    with pytest.raises(InvalidArgument, match="not valid yaml"):
        load_settings(cfg)
