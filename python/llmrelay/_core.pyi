"""Types of the native core ``llmrelay._core`` (checked by ``mypy.stubtest``)."""

from typing import Literal, final

__all__ = [
    "CircuitBreaker",
    "ManualClock",
    "RateLimiter",
    "__version__",
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
