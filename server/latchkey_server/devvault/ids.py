"""Random identifiers in Vault's shapes."""

from __future__ import annotations

import secrets
import string
import uuid

BASE62 = string.ascii_letters + string.digits


def base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def new_uuid() -> str:
    return str(uuid.uuid4())


def service_token() -> str:
    return "hvs." + base62(24)


def hex8() -> str:
    return secrets.token_hex(4)
