"""Free TCP ports on loopback."""

from __future__ import annotations

import socket


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return `count` distinct free ports, holding every socket until all are chosen."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def preferred_port(port: int, host: str = "127.0.0.1") -> int:
    """`port` if it is free on `host`, else a free one (so `make dev` keeps familiar ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return free_ports(1, host)[0]
    return port


def _pair_free(port: int, host: str) -> bool:
    held: list[socket.socket] = []
    try:
        for candidate in (port, port + 1):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((host, candidate))
    except OSError:
        return False
    finally:
        for sock in held:
            sock.close()
    return True


def free_port_pair(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A free port whose successor is free too (Vault/OpenBao dev mode binds both)."""
    for _ in range(attempts):
        port = free_ports(1, host)[0]
        if port < 65535 and _pair_free(port, host):
            return port
    raise OSError("no two adjacent free ports found on " + host)


def preferred_port_pair(port: int, host: str = "127.0.0.1") -> int:
    """`port` if it and `port`+1 are free, else another such pair."""
    return port if _pair_free(port, host) else free_port_pair(host)
