"""Bearer tokens: stored hashed, matched to identities, refused otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from latchkey_server.access.authn import Authenticator
from latchkey_server.access.tokens import TokenStore, append_token, generate_token, hash_token
from latchkey_server.errors import InvalidArgument, Unauthenticated


def test_tokens_file_holds_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    token = generate_token()
    append_token(path, "billing", token)
    text = path.read_text()
    assert token not in text
    assert hash_token(token) in text
    assert path.stat().st_mode & 0o077 == 0
    store = TokenStore.load(path)
    assert store.identify(token) == "billing"
    assert store.identify(token + "x") is None
    assert store.identify("") is None


def test_authenticator_requires_bearer(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    token = generate_token()
    append_token(path, "ops", token)
    authn = Authenticator(TokenStore.load(path))
    assert authn.authenticate({"authorization": f"Bearer {token}"}, "ipv4:1.2.3.4:5").name == "ops"
    with pytest.raises(Unauthenticated, match="no credentials"):
        authn.authenticate({}, "")
    with pytest.raises(Unauthenticated, match="malformed"):
        authn.authenticate({"authorization": token}, "")
    with pytest.raises(Unauthenticated, match="unknown") as err:
        authn.authenticate({"authorization": "Bearer nope"}, "")
    assert "nope" not in str(err.value)


def test_bad_tokens_file_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - identity: x\n    sha256: abc\n")
    with pytest.raises(InvalidArgument, match="64 hex"):
        TokenStore.load(path)
