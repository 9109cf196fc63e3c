"""Types of the native core ``llmrelay._core`` (checked by ``mypy.stubtest``)."""

from asyncio import Future
from collections.abc import Callable
from typing import final

__all__ = [
    "Completions",
    "HttpBody",
    "HttpClient",
    "HttpRequest",
    "HttpTransportError",
    "ManualClock",
    "__version__",
]

__version__: str

@final
class ManualClock:
    """A clock that moves only when told to; pass it to a primitive to drive time by hand."""

    def __new__(cls, start_s: float = 0.0) -> ManualClock: ...
    def advance(self, seconds: float) -> None: ...
    def now(self) -> float: ...

# --- HTTP client (transport) ---

@final
class Completions:
    """Completes asyncio futures from the runtime; watch ``fileno()`` and call ``drain()``."""

    def __new__(
        cls, call_soon: Callable[[Callable[[], object]], object] | None = None
    ) -> Completions: ...
    def flush(self) -> int: ...
    def fileno(self) -> int: ...
    def drain(self) -> int: ...
    def pending(self) -> int: ...

class HttpTransportError(Exception):
    """A request of ``HttpClient`` failed; ``args`` is ``(kind, message)``."""

@final
class HttpClient:
    """A pooled HTTP/1.1 + HTTP/2 client (rustls TLS) on the core's tokio runtime."""

    def __new__(
        cls,
        connect_timeout_s: float = 10.0,
        pool_idle_timeout_s: float = 90.0,
        max_idle_per_host: int = 64,
        http2: bool = True,
    ) -> HttpClient: ...
    def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout_s: float | None,
        completions: Completions,
        future: Future[object],
    ) -> HttpRequest: ...
    def close(self) -> None: ...

@final
class HttpRequest:
    """A request in flight."""

    def abort(self) -> None: ...
    def finished(self) -> bool: ...

@final
class HttpBody:
    """A streamed response body; each read returns everything buffered so far."""

    def next_chunk(
        self, completions: Completions, future: Future[object], max_bytes: int = 65536
    ) -> bytes | None: ...
    @property
    def buffered(self) -> int: ...
    def close(self) -> None: ...
