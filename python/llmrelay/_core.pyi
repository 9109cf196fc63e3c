"""Types of the native core ``llmrelay._core`` (checked by ``mypy.stubtest``)."""

from asyncio import Future
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, final

__all__ = [
    "DEADLINE",
    "DEDUP_DONE",
    "DEDUP_FOLLOWER",
    "DEDUP_LEADER",
    "ERROR",
    "FAILURE",
    "GATE_PERMIT",
    "GATE_SHARED",
    "GATE_WAIT",
    "IGNORED",
    "OVERLOAD",
    "SUCCESS",
    "THROTTLED",
    "CircuitBreaker",
    "Completions",
    "DiskCache",
    "Gate",
    "HttpBody",
    "HttpClient",
    "HttpRequest",
    "HttpTransportError",
    "HybridCache",
    "ManualClock",
    "MemoryCache",
    "Metrics",
    "PriorityScheduler",
    "RateLimiter",
    "RequestDeduplicator",
    "SharedBreakers",
    "SharedCache",
    "SharedDedup",
    "SharedLease",
    "SharedLimiter",
    "StreamFramer",
    "__version__",
    "cache_key",
]

__version__: str

@final
class ManualClock:
    """A clock that moves only when told to; pass it to a primitive to drive time by hand."""

    def __new__(cls, start_s: float = 0.0) -> ManualClock: ...
    def advance(self, seconds: float) -> None: ...
    def now(self) -> float: ...

@final
class RateLimiter:
    """Keyed GCRA rate limiter (see rust/limiter.rs).

    An unconfigured key is unlimited. ``reserve`` always books and is FIFO per key;
    ``reserve_many`` checks every cost first, then books each key on its own (not
    atomically) and returns the largest delay. A cell idle for ``idle_ttl_s`` with full
    capacity is forgotten, and its key is unconfigured until ``configure`` is called
    again (pass ``idle_ttl_s=math.inf`` to keep cells forever).
    """

    def __new__(
        cls, *, idle_ttl_s: float = 600.0, clock: ManualClock | None = None
    ) -> RateLimiter: ...
    def configure(self, key: str, rate_per_s: float, burst: float) -> None: ...
    def try_acquire(self, key: str, cost: float = 1.0) -> float: ...
    def reserve(self, key: str, cost: float = 1.0) -> float: ...
    def reserve_many(self, items: list[tuple[str, float]]) -> float: ...
    def reconcile(self, key: str, estimated: float, actual: float) -> None: ...
    def refund(self, key: str, cost: float) -> None: ...
    def observe_headers(
        self, key: str, remaining: float, limit: float | None, reset_s: float
    ) -> None: ...
    def available(self, key: str) -> float: ...
    def sweep(self) -> int: ...
    def __len__(self) -> int: ...

@final
class CircuitBreaker:
    """Circuit breaker on a count-based sliding window (see rust/breaker.rs).

    Every method, reading ``state`` included, first applies the lazy OPEN -> HALF_OPEN
    transition once the open period is over. Outcomes recorded while OPEN, or while
    HALF_OPEN with no probe outstanding, are dropped.
    """

    def __new__(
        cls,
        name: str,
        *,
        failure_rate_threshold: float = 0.5,
        slow_call_rate_threshold: float = 1.0,
        slow_call_duration_s: float | None = None,
        minimum_calls: int = 10,
        window_size: int = 20,
        open_duration_s: float = 30.0,
        open_backoff_multiplier: float = 1.0,
        max_open_duration_s: float = 300.0,
        half_open_max_calls: int = 1,
        clock: ManualClock | None = None,
    ) -> CircuitBreaker: ...
    def try_acquire(self) -> bool: ...
    def acquire(self) -> None: ...
    def record(self, outcome: str, duration_s: float = 0.0) -> None: ...
    def reset(self) -> None: ...
    @property
    def state(self) -> Literal["closed", "open", "half_open"]: ...
    @property
    def failure_rate(self) -> float: ...
    @property
    def slow_call_rate(self) -> float: ...
    @property
    def retry_after_s(self) -> float: ...
    @property
    def name(self) -> str: ...
    def transitions(self) -> dict[str, int]: ...
    def stats(self) -> dict[str, float | int | str]: ...

@final
class Metrics:
    """Counters, gauges and latency histograms per (provider, model, deployment).

    ``reset`` drops every series; the next update of a series starts it from zero.
    """

    def __new__(cls) -> Metrics: ...
    def incr(self, provider: str, model: str, deployment: str, name: str, n: int = 1) -> None: ...
    def set_gauge(
        self, provider: str, model: str, deployment: str, name: str, value: float
    ) -> None: ...
    def observe(
        self, provider: str, model: str, deployment: str, name: str, seconds: float
    ) -> None: ...
    def record(
        self,
        provider: str,
        model: str,
        deployment: str,
        counters: list[tuple[str, int]],
        observations: list[tuple[str, float]],
    ) -> None: ...
    def counter(self, provider: str, model: str, deployment: str, name: str) -> int: ...
    def snapshot(self) -> list[dict[str, object]]: ...
    def histogram_buckets(
        self, provider: str, model: str, deployment: str, name: str, bounds_s: list[float]
    ) -> list[int]: ...
    def reset(self) -> None: ...
    def series_count(self) -> int: ...

@final
class PriorityScheduler:
    """Priority admission (0..=9, lower first, FIFO within, aging), a bounded queue and
    AIMD-adaptive concurrency slots. The core decides; the caller awaits futures keyed by
    the tickets that ``release``/``cancel``/``set_limit`` return."""

    def __new__(
        cls,
        *,
        max_concurrency: int = 64,
        min_concurrency: int = 1,
        initial_concurrency: int | None = None,
        max_queue: int = 10000,
        adaptive: bool = True,
        aging_s: float = 10.0,
        decrease_factor: float = 0.5,
        increase_step: float = 1.0,
        clock: ManualClock | None = None,
    ) -> PriorityScheduler: ...
    def acquire(self, priority: int) -> tuple[int, bool]: ...
    def release(
        self, ticket: int, outcome: str = "success", latency_s: float = 0.0
    ) -> list[int]: ...
    def cancel(self, ticket: int) -> list[int]: ...
    def set_limit(self, limit: float) -> list[int]: ...
    def queue_wait_s(self, ticket: int) -> float: ...
    @property
    def limit(self) -> float: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def max_queue(self) -> int: ...
    def stats(self) -> dict[str, float | int]: ...

#: Outcomes of an attempt, for ``Gate.settle`` (see rust/gate/mod.rs).
SUCCESS: Final[int]
THROTTLED: Final[int]
OVERLOAD: Final[int]
FAILURE: Final[int]
ERROR: Final[int]
IGNORED: Final[int]
DEADLINE: Final[int]
#: Answers of ``Gate.admit`` / ``Gate.resume``: ``(kind, id, delay_s)``.
GATE_PERMIT: Final[int]
GATE_WAIT: Final[int]
#: ``admit`` of a gate with shared limits: the future passed to it gets the answer.
GATE_SHARED: Final[int]

@final
class Gate:
    """One deployment's admission: scheduler, rate-limit cells, breaker and retry budget
    (see rust/gate/mod.rs).

    ``admit`` answers ``(GATE_PERMIT, id, 0.0)`` (slot taken, breaker permitted,
    reservation spent), ``(GATE_WAIT, id, delay_s)`` (sleep ``delay_s``, or with 0 wait
    until ``id`` is woken, then ``resume``), or raises ``CircuitOpenError``,
    ``QueueFullError`` or ``ClientThrottledError`` with everything booked given back.
    ``settle`` books a permit's outcome at once. A queued caller parks its future
    (``park``; False: granted already); the ``settle``/``cancel`` that grants its entry
    sets the future's result to None through its loop's ``Completions`` (any loop, any
    thread) and returns the ids it woke. ``scheduler`` and ``breaker`` are views to read.

    With ``shared`` (a ``SharedLimiter``) its limits are cluster-wide: ``admit``
    answers ``(GATE_SHARED, id, 0.0)`` and the Redis check settles ``future`` (through
    ``completions``) with what ``admit`` would have answered, or a refusal.
    """

    def __new__(
        cls,
        name: str,
        *,
        limiter: RateLimiter,
        max_concurrency: int = 64,
        min_concurrency: int = 1,
        max_queue: int = 10000,
        adaptive: bool = True,
        aging_s: float = 10.0,
        failure_rate_threshold: float = 0.5,
        slow_call_rate_threshold: float = 1.0,
        slow_call_duration_s: float | None = None,
        minimum_calls: int = 10,
        window_size: int = 20,
        open_duration_s: float = 30.0,
        open_backoff_multiplier: float = 1.0,
        max_open_duration_s: float = 300.0,
        half_open_max_calls: int = 1,
        retry_budget_ratio: float = 0.2,
        retry_budget_floor: float = 10.0,
        clock: ManualClock | None = None,
        shared: SharedLimiter | None = None,
    ) -> Gate: ...
    def admit(
        self,
        priority: int,
        est_in: int,
        est_out: int,
        wait_s: float,
        deadline_s: float,
        first: bool = False,
        future: Future[tuple[int, int, float, str]] | None = None,
        completions: Completions | None = None,
    ) -> tuple[int, int, float]: ...
    def resume(self, id: int) -> tuple[int, int, float]: ...
    def settle(
        self,
        id: int,
        outcome: int,
        latency_s: float = 0.0,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        retry_after_s: float | None = None,
    ) -> list[int]: ...
    def cancel(self, id: int) -> list[int]: ...
    def park(self, id: int, future: Future[None], completions: Completions) -> bool: ...
    def parked(self) -> list[int]: ...
    def try_retry(self) -> bool: ...
    def is_open(self) -> bool: ...
    def configure_limit(self, dim: str, rate_per_s: float, burst: float) -> str: ...
    def observe_headers(
        self, dim: str, remaining: float, limit: float | None, reset_s: float
    ) -> bool: ...
    def rate_keys(self) -> dict[str, str]: ...
    def limiter_stats(self) -> dict[str, float]: ...
    def stats(self) -> dict[str, float | int]: ...
    def after_fork(self) -> None: ...
    def share_breaker(self, hub: SharedBreakers) -> None: ...
    def shared_breaker_stats(self) -> dict[str, Any] | None: ...
    @property
    def name(self) -> str: ...
    @property
    def scheduler(self) -> PriorityScheduler: ...
    @property
    def breaker(self) -> CircuitBreaker: ...
    @property
    def shared(self) -> bool: ...

DEDUP_LEADER: Final[int]

DEDUP_FOLLOWER: Final[int]

DEDUP_DONE: Final[int]

@final
class RequestDeduplicator:
    """In-flight join map keyed by string, with an optional window for completed results.

    A follower that joins with its future and its loop's ``Completions`` is parked in the
    core: ``complete`` sets ``(DEDUP_DONE, value)`` on it, a permanent ``fail`` the error,
    a promotion ``(DEDUP_LEADER, None)``, through that loop's queue.
    """

    def __new__(
        cls, *, window_s: float = 0.0, max_entries: int = 100000, clock: ManualClock | None = None
    ) -> RequestDeduplicator: ...
    def join(
        self,
        key: str,
        future: Future[tuple[int, object]] | None = None,
        completions: Completions | None = None,
    ) -> tuple[int, int, object | None]: ...
    def complete(self, key: str, ticket: int, value: object) -> list[int]: ...
    def fail(
        self, key: str, ticket: int, transient: bool, error: BaseException | None = None
    ) -> tuple[int | None, list[int]]: ...
    def cancel(self, key: str, ticket: int) -> int | None: ...
    def leave(self, key: str, ticket: int) -> None: ...
    def in_flight(self) -> int: ...
    def waiting(self) -> int: ...
    def parked(self) -> int: ...
    def __len__(self) -> int: ...
    def sweep(self) -> int: ...
    def stats(self) -> dict[str, int]: ...

def cache_key(data: bytes, scope: str = "") -> bytes:
    """The canonical 16-byte key: xxh3-128 of ``scope + b"\\0" + data`` (big-endian)."""

@final
class MemoryCache:
    """The memory tier alone (moka): TinyLFU or LRU, bounded by entries and bytes, TTLs."""

    def __new__(
        cls,
        *,
        memory_max_entries: int = 10_000,
        memory_max_bytes: int | None = None,
        ttl_s: float | None = None,
        eviction: str = "tinylfu",
        clock: ManualClock | None = None,
    ) -> MemoryCache: ...
    def get(self, key: bytes) -> bytes | None: ...
    def set(self, key: bytes, value: bytes, ttl_s: float | None = None) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def clear(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def __len__(self) -> int: ...

@final
class DiskCache:
    """The disk tier alone (sled): checksummed envelopes, TTLs, a byte budget, self-repair."""

    def __new__(
        cls,
        path: str,
        *,
        max_bytes: int | None = None,
        flush_every_ms: int | None = 500,
        clock: ManualClock | None = None,
    ) -> DiskCache: ...
    def get(self, key: bytes) -> bytes | None: ...
    def set(self, key: bytes, value: bytes, ttl_s: float | None = None) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def clear(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def __len__(self) -> int: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def error(self) -> str | None: ...

@final
class HybridCache:
    """Memory over disk, with promotion and write-through or write-behind."""

    def __new__(
        cls,
        *,
        memory_max_entries: int = 10_000,
        memory_max_bytes: int | None = None,
        ttl_s: float | None = None,
        eviction: str = "tinylfu",
        disk_path: str | None = None,
        disk_max_bytes: int | None = None,
        promotion: str = "on_hit",
        promote_after: int = 2,
        write_mode: str = "write_through",
        flush_every_ms: int | None = 500,
        clock: ManualClock | None = None,
    ) -> HybridCache: ...
    def get(self, key: bytes) -> bytes | None: ...
    def get_memory(self, key: bytes) -> bytes | None: ...
    def get_hot(self, key: bytes) -> bytes | None: ...
    def get_counted(
        self,
        key: bytes,
        hot: bool,
        metrics: Metrics,
        provider: str,
        model: str,
        deployment: str,
        name: str,
    ) -> bytes | None: ...
    def get_disk(self, key: bytes) -> bytes | None: ...
    def set(self, key: bytes, value: bytes, ttl_s: float | None = None) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def clear(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    @property
    def disk_enabled(self) -> bool: ...
    @property
    def disk_error(self) -> str | None: ...
    @property
    def memory_entries(self) -> int: ...
    def __len__(self) -> int: ...

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
        body_idle_s: float | None = None,
        framing: str | None = None,
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
    def next_events(
        self, completions: Completions, future: Future[object], max_events: int = 1024
    ) -> list[tuple[str, bytes]] | None:
        """Whole ``(event, data)`` pairs buffered now (``[]`` at the end), or ``None``:
        ``future`` then gets the next ones. Only for a body requested with ``framing``."""
    @property
    def framing(self) -> str | None: ...
    @property
    def buffered(self) -> int: ...
    def close(self) -> None: ...

@final
class StreamFramer:
    """The core's SSE (``"sse"``) / NDJSON (``"ndjson"``) framer over bytes read elsewhere."""

    def __new__(cls, framing: str) -> StreamFramer: ...
    def feed(self, data: bytes) -> list[tuple[str, bytes]]: ...
    def finish(self) -> list[tuple[str, bytes]]: ...
    @property
    def framing(self) -> str: ...

@final
class SharedLimiter:
    """Keyed GCRA limiter whose cells live in Redis, shared by every process.

    Each method that talks to Redis returns at once; its result settles
    ``future`` through ``completions``. ``url`` (here and for ``SharedCache`` and
    ``SharedDedup``) is one ``redis://``, ``rediss://`` or ``unix://`` URL, or
    ``cluster:`` and comma-separated seed URLs for a Redis Cluster
    (``llmrelay._shared.core_url`` writes it from ``SharedStateConfig``).
    """

    def __new__(
        cls,
        url: str,
        *,
        namespace: str = "llmrelay",
        on_unavailable: str = "local_share",
        op_timeout_s: float = 0.025,
        lease_ttl_s: float | None = None,
    ) -> SharedLimiter: ...
    def configure(self, key: str, rate_per_s: float, burst: float) -> None: ...
    def reserve_many(
        self,
        completions: Completions,
        future: Future[object],
        items: Sequence[tuple[str, float]],
        max_wait_s: float = 0.0,
        reservation: str | None = None,
    ) -> None: ...
    def refund(
        self,
        completions: Completions,
        future: Future[object],
        items: Sequence[tuple[str, float]],
    ) -> None: ...
    def reconcile(
        self,
        completions: Completions,
        future: Future[object],
        reservation: str,
        items: Sequence[tuple[str, float]],
    ) -> None: ...
    def observe_headers(
        self,
        completions: Completions,
        future: Future[object],
        key: str,
        remaining: float,
        limit: float | None,
        reset_s: float,
    ) -> None: ...
    def pause(
        self,
        completions: Completions,
        future: Future[object],
        key: str,
        retry_after_s: float,
    ) -> None: ...
    def available(self, completions: Completions, future: Future[object], key: str) -> None: ...
    def heartbeat(self, completions: Completions, future: Future[object]) -> None: ...
    def warm(self) -> None: ...
    @property
    def member(self) -> str: ...
    @property
    def on_unavailable(self) -> str: ...
    def stats(self) -> dict[str, Any]: ...
    @property
    def leased(self) -> bool: ...
    def leased_units(self, key: str) -> float: ...
    def take_leased(self, items: Sequence[tuple[str, float]]) -> bool: ...
    def release_leases(self, completions: Completions, future: Future[object]) -> None: ...
    def release_leases_blocking(self) -> float: ...

@final
class SharedCache:
    """The shared cache tier on Redis: sealed (versioned, checksummed, zstd)
    entries with a jittered TTL; every failure is a miss.

    ``get`` and ``drain`` return at once; their result settles ``future``
    through ``completions``. ``set`` queues the write and returns at once.
    """

    def __new__(
        cls,
        url: str,
        *,
        namespace: str = "llmrelay",
        op_timeout_s: float = 0.025,
        default_ttl_s: float = 86_400.0,
    ) -> SharedCache: ...
    def get(self, completions: Completions, future: Future[object], key: bytes) -> None: ...
    def set(self, key: bytes, value: bytes, ttl_s: float | None = None) -> bool: ...
    def drain(self, completions: Completions, future: Future[object], timeout_s: float) -> None: ...
    def redis_key(self, key: bytes) -> str: ...
    def stats(self) -> dict[str, int]: ...

@final
class SharedLease:
    """A process's leadership of one request across processes (``SharedDedup.join``)."""

    def complete(self, key: bytes, value: bytes) -> bool: ...
    def abandon(self) -> bool: ...
    @property
    def settled(self) -> bool: ...

@final
class SharedDedup:
    """Cross-process dedup on Redis: a renewable lease per request, the leader's
    result stored and published, waiters woken by one subscription per process.

    ``join``'s future gets ``("lead", SharedLease)``, ``("done", bytes)``,
    ``("timeout", None)`` or ``("unavailable", None)``.
    """

    def __new__(
        cls,
        url: str,
        *,
        namespace: str = "llmrelay",
        op_timeout_s: float = 0.025,
        lease_s: float = 3.0,
    ) -> SharedDedup: ...
    def join(
        self, completions: Completions, future: Future[object], key: bytes, max_wait_s: float
    ) -> None: ...
    @property
    def lease_s(self) -> float: ...
    def stats(self) -> dict[str, int]: ...

@final
class SharedBreakers:
    """Shared circuit breakers on Redis: one connection and one subscription per
    service; each deployment's gate gets its breaker with ``Gate.share_breaker``."""

    def __new__(
        cls, url: str, *, namespace: str = "llmrelay", op_timeout_s: float = 0.025
    ) -> SharedBreakers: ...
    def warm(self) -> None: ...
    @property
    def member(self) -> str: ...
    def stats(self) -> dict[str, int]: ...
