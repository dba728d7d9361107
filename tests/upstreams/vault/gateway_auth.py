"""The gateway's ways of logging in to Vault, set up on the Vault under test (one mount each).

`set_up_login` enables a fresh auth mount for a method (token, approle, userpass, jwt), binds
it to a policy with the given token TTL and max TTL, and returns the adapter's `auth` with its
credential in a file where the method takes one. `JwtIssuer` is a minimal JWS (ES256, compact
serialisation) signer: Vault's `jwt` auth method is configured with its public key
(`jwt_validation_pubkeys`), as it would be with a Kubernetes cluster's service-account issuer.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import hvac
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from latchkey_server.upstreams.vault import (
    AppRoleAuth,
    FileSecret,
    JwtAuth,
    TokenAuth,
    UserpassAuth,
    VaultAuth,
)

METHODS = ("token", "approle", "userpass", "jwt")
LOGIN_METHODS = ("approle", "userpass", "jwt")
AUDIENCE = "vault"
ISSUER = "https://kubernetes.default.svc.cluster.local"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class JwtIssuer:
    """Signs JWTs with a fresh P-256 key (ES256), as a service-account token issuer does."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def mint(self, subject: str, *, audience: str = AUDIENCE, lifetime: int = 600) -> str:
        """A signed JWT (JWS compact serialisation: header.claims.signature, base64url)."""
        now = int(time.time())
        header = {"alg": "ES256", "typ": "JWT"}
        claims = {
            "iss": ISSUER, "sub": subject, "aud": audience,
            "iat": now, "nbf": now, "exp": now + lifetime, "jti": secrets.token_hex(8),
        }  # fmt: skip
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass
class GatewayLogin:
    """One way for the gateway to log in, set up in Vault."""

    method: str
    auth: VaultAuth
    mount: str
    """The auth mount ("token" for a given token)."""
    name: str
    """The AppRole role, userpass user or JWT role (the token itself for a given token)."""
    credential_file: Path
    credential: str = field(repr=False, default="")
    issuer: JwtIssuer | None = None
    subject: str = ""

    def rotate_credential(self, root: hvac.Client) -> None:
        """Replace the credential in Vault and in its file, so that the old one no longer
        works: a login after this succeeds only if the adapter reads the file again."""
        if self.method == "approle":
            new = root.auth.approle.generate_secret_id(self.name, mount_point=self.mount)
            root.auth.approle.destroy_secret_id(self.name, self.credential, mount_point=self.mount)
            self.credential = new["data"]["secret_id"]
        elif self.method == "userpass":
            self.credential = secrets.token_urlsafe(18)
            root.write(f"auth/{self.mount}/users/{self.name}/password", password=self.credential)
        elif self.method == "jwt":
            self.issuer = JwtIssuer()
            root.auth.jwt.configure(
                jwt_validation_pubkeys=[self.issuer.public_pem], path=self.mount
            )
            self.credential = self.issuer.mint(self.subject)
        else:
            raise AssertionError(
                f"a given token cannot be rotated under the gateway ({self.method})"
            )
        self.credential_file.write_text(self.credential + "\n")


def set_up_login(
    root: hvac.Client, method: str, *, policy: str, ttl: str, max_ttl: str, workdir: Path
) -> GatewayLogin:
    """Enable `method` on a fresh mount; tokens it yields carry `policy`, `ttl` and `max_ttl`.
    The credential (token, secret_id, password, JWT) is handed to the adapter as a file."""
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"latchkey-gateway-{secrets.token_hex(3)}"
    mount = f"{method}-{secrets.token_hex(3)}"
    path = workdir / f"vault-{method}-credential"
    secret = FileSecret(path, f"vault.auth.{_FILE_SETTING[method]}")
    token_params = {"token_policies": [policy], "token_ttl": ttl, "token_max_ttl": max_ttl}
    login: GatewayLogin
    if method == "token":
        token = root.auth.token.create(
            policies=[policy], ttl=ttl, explicit_max_ttl=max_ttl, renewable=True
        )["auth"]["client_token"]
        login = GatewayLogin(method, TokenAuth(secret), "token", "(given)", path, token)
    elif method == "approle":
        root.sys.enable_auth_method(method, path=mount)
        root.write(f"auth/{mount}/role/{name}", **token_params)
        role_id = root.auth.approle.read_role_id(name, mount_point=mount)["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id(name, mount_point=mount)["data"]
        approle = AppRoleAuth(role_id, secret, mount=mount)
        login = GatewayLogin(method, approle, mount, name, path, secret_id["secret_id"])
    elif method == "userpass":
        root.sys.enable_auth_method(method, path=mount)
        password = secrets.token_urlsafe(18)
        root.write(f"auth/{mount}/users/{name}", password=password, **token_params)
        login = GatewayLogin(method, UserpassAuth(name, secret, mount=mount), mount, name, path,
                             password)  # fmt: skip
    else:
        assert method == "jwt", method
        root.sys.enable_auth_method(method, path=mount)
        issuer, subject = JwtIssuer(), f"system:serviceaccount:latchkey:{name}"
        root.auth.jwt.configure(jwt_validation_pubkeys=[issuer.public_pem], path=mount)
        root.write(
            f"auth/{mount}/role/{name}", role_type="jwt", user_claim="sub",
            bound_audiences=[AUDIENCE], bound_subject=subject, **token_params,
        )  # fmt: skip
        auth = JwtAuth(name, secret, mount=mount)
        login = GatewayLogin(method, auth, mount, name, path, issuer.mint(subject), issuer, subject)
    path.write_text(login.credential + "\n")
    return login


_FILE_SETTING = {
    "token": "token_file",
    "approle": "secret_id_file",
    "userpass": "password_file",
    "jwt": "jwt_file",
}
