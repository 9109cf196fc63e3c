"""Keep the benchmark offline: refuse any connection or name lookup that is not loopback.

LiteLLM is told to stay offline (LITELLM_LOCAL_MODEL_COST_MAP, telemetry off); this guard
makes sure of it. It wraps ``socket.getaddrinfo`` and ``socket.socket.connect`` (which
asyncio, httpx and aiohttp all go through) and only costs anything when a connection opens.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "", None}
blocked: list[str] = []


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def install() -> None:
    """Install the guard in this process (idempotent)."""
    if getattr(socket, "_bench_guarded", False):
        return
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if not _is_local(host):
            blocked.append(str(host))
            raise socket.gaierror(f"benchmark is offline: lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kw)

    def check(address: Any) -> None:
        if isinstance(address, tuple) and not _is_local(address[0]):
            blocked.append(str(address[0]))
            raise ConnectionRefusedError(f"benchmark is offline: connect to {address!r} refused")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket._bench_guarded = True  # type: ignore[attr-defined]
