"""Types of the native core ``llmrelay._core`` (checked by ``mypy.stubtest``)."""

from typing import final

__all__ = ["ManualClock", "Metrics", "__version__"]

__version__: str

@final
class ManualClock:
    """A clock that moves only when told to; pass it to a primitive to drive time by hand."""

    def __new__(cls, start_s: float = 0.0) -> ManualClock: ...
    def advance(self, seconds: float) -> None: ...
    def now(self) -> float: ...

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
