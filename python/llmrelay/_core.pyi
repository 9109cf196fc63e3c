"""Types of the native core ``llmrelay._core`` (checked by ``mypy.stubtest``)."""

from typing import final

__all__ = ["ManualClock", "__version__"]

__version__: str

@final
class ManualClock:
    """A clock that moves only when told to; pass it to a primitive to drive time by hand."""

    def __new__(cls, start_s: float = 0.0) -> ManualClock: ...
    def advance(self, seconds: float) -> None: ...
    def now(self) -> float: ...
