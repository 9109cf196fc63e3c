"""The per-call object every stage reads and writes: :class:`Prepared`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmrelay._cachekey import CacheControl
from llmrelay._types import ChatRequest

if TYPE_CHECKING:
    from llmrelay._budget import Budget
    from llmrelay._outputspec import OutputSpec
    from llmrelay._selection import Candidate
    from llmrelay._telemetry import CallTrace

__all__ = ["DEFAULT_OUTPUT_ESTIMATE", "Prepared"]

#: The output tokens a call without ``max_tokens`` is booked for, until its usage is known.
DEFAULT_OUTPUT_ESTIMATE = 512


@dataclass(slots=True)
class Prepared:
    """A validated call: the request, its candidates and its cache key."""

    req: ChatRequest
    model: str
    priority: int
    cands: list[Candidate]
    key: bytes | None
    cc: CacheControl
    est_in: int
    est_out: int
    #: the cache mode: the call's ``CacheControl.mode``, else ``CacheConfig.mode``
    mode: str = "read_write"
    #: what a ``response_format`` model asks for (None: no structured output)
    structured: OutputSpec | None = None
    #: the call's events (None: nobody listens)
    trace: CallTrace | None = None
    #: the USD budgets of the views the call was made through (innermost last)
    budgets: tuple[Budget, ...] = ()
