"""Each wire library is imported in one room only (DESIGN.md; style-examples §5)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "server" / "latchkey_server"

# library → the server paths allowed to import it (relative to latchkey_server/).
ALLOWED: dict[str, tuple[str, ...]] = {
    # The gateway's gRPC surface (including the health probe `make dev` and containers use).
    "grpc": ("transport/",),
    "grpc_health": ("transport/",),
    "grpc_reflection": ("transport/",),
    # Vault: the adapter; the demo seeding acts as an operator through the client library.
    "hvac": ("upstreams/vault.py", "devstack/seed.py"),
    # Consul: python-consul2 only for seeding; the adapter speaks HTTP with aiohttp.
    "consul": ("devstack/seed.py",),
    "aiohttp": ("upstreams/consul.py",),
    # Tracing: wired in one module; the rooms call its functions.
    "opentelemetry": ("observability/tracing.py",),
    # Brokers and access never see protobuf messages.
    "latchkey.v1": ("transport/",),
    "google.protobuf": ("transport/",),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_wire_libraries_stay_in_their_rooms() -> None:
    offenders: list[str] = []
    for path in sorted(SERVER.rglob("*.py")):
        rel = path.relative_to(SERVER).as_posix()
        for module in _imports(path):
            for library, allowed in ALLOWED.items():
                if (module == library or module.startswith(library + ".")) and not rel.startswith(
                    allowed
                ):
                    offenders.append(f"{rel} imports {module}")
    assert offenders == []


def test_brokers_and_access_do_not_import_transport() -> None:
    offenders = [
        f"{path.relative_to(SERVER)} imports {module}"
        for room in ("brokers", "access", "upstreams")
        for path in (SERVER / room).rglob("*.py")
        for module in _imports(path)
        if module.startswith("latchkey_server.transport")
    ]
    assert offenders == []


def test_brokers_reach_upstreams_only_through_their_ports() -> None:
    """Brokers depend on the narrow port modules (`vault_port.py`, `consul_port.py`), never on
    an adapter module (which imports a wire library) or its private helpers."""
    offenders = [
        f"{path.relative_to(SERVER)} imports {module}"
        for path in (SERVER / "brokers").rglob("*.py")
        for module in _imports(path)
        if module.startswith("latchkey_server.upstreams") and not module.endswith("_port")
    ]
    assert offenders == []
