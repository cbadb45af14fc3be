"""Free loopback ports, picked by the kernel so parallel runs on one machine never collide."""

from __future__ import annotations

import socket

from testbed.errors import ComponentError


def free_loopback_ports(count: int) -> list[int]:
    """Ports the kernel considers free on 127.0.0.1; all sockets are held until every port is picked so
    the same port is never returned twice (another process may still grab one before we bind: rare)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_udp_and_tcp_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (a DNS server listens on both)."""
    for _ in range(50):
        port = free_loopback_ports(1)[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ComponentError("no port free for both TCP and UDP on 127.0.0.1")
