"""The hubs stay in their room: no wire library, no protobuf, no grpc."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import latchkey_server

ROOT = Path(latchkey_server.__file__).parent
FORBIDDEN = ("grpc", "google.protobuf", "latchkey.v1", "aiohttp", "consul", "requests")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "module",
    [
        "brokers/config_hub.py",
        "brokers/discovery_hub.py",
        "brokers/fanout.py",
        "brokers/consul_watch.py",
        "brokers/_hub.py",
        "brokers/_overflow.py",
        "upstreams/consul_port.py",
    ],
)
def test_no_wire_library_imports(module: str) -> None:
    bad = {
        name
        for name in _imports(ROOT / module)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert bad == set()
