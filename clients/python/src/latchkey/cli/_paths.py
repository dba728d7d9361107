"""Secret paths as Vault users write them.

`latchkey secrets get` (and `exec --secret`) take a path relative to the KV v2 mount
(`myapp/database`, mount `secret` by default), or a path that starts with the mount as Vault's
CLI writes it (`secret/myapp/database`, what `vault kv get` takes and what `secrets get` prints)
or as its HTTP API and policies write it (`secret/data/myapp/database`). Like Vault's CLI, a
first segment that names the mount is the mount, so a secret stored at `secret/x` inside the
mount `secret` is `secret/secret/x`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import latchkey


def secret_location(arg: str, mount: str) -> tuple[str, str]:
    """(mount, path inside the mount) for what the user typed."""
    for prefix in (f"{mount}/data/", f"{mount}/"):
        if arg.startswith(prefix) and len(arg) > len(prefix):
            return mount, arg.removeprefix(prefix)
    return mount, arg


@contextmanager
def with_mount_hint(path: str, mount: str) -> Iterator[None]:
    """Add the right form to a NotFound for a path that looks like another mount's API path
    (`kv/data/myapp`: the gateway cannot tell which mounts exist)."""
    try:
        yield
    except latchkey.NotFound as exc:
        first, sep, rest = path.partition("/data/")
        if not sep or "/" in first or not rest:
            raise
        raise latchkey.NotFound(
            f"{exc.message}; if {first!r} is a KV v2 mount, read it with: "
            f"latchkey secrets get --mount {first} {rest}"
        ) from exc
