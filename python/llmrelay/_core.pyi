"""Types of the native core ``llmrelay._core`` (checked by ``mypy.stubtest``)."""

from typing import Final, final

__all__ = [
    "DEDUP_DONE",
    "DEDUP_FOLLOWER",
    "DEDUP_LEADER",
    "ManualClock",
    "PriorityScheduler",
    "RequestDeduplicator",
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

DEDUP_LEADER: Final[int]
DEDUP_FOLLOWER: Final[int]
DEDUP_DONE: Final[int]

@final
class RequestDeduplicator:
    """In-flight join map keyed by string, with an optional window for completed results."""

    def __new__(
        cls, *, window_s: float = 0.0, max_entries: int = 100000, clock: ManualClock | None = None
    ) -> RequestDeduplicator: ...
    def join(self, key: str) -> tuple[int, int, object | None]: ...
    def complete(self, key: str, ticket: int, value: object) -> list[int]: ...
    def fail(self, key: str, ticket: int, transient: bool) -> tuple[int | None, list[int]]: ...
    def leave(self, key: str, ticket: int) -> None: ...
    def in_flight(self) -> int: ...
    def waiting(self) -> int: ...
    def __len__(self) -> int: ...
    def sweep(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
