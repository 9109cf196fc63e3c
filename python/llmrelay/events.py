"""Typed events of a service: what each call did, as it happens.

Register a listener with ``LLMService(config, on_event=fn)`` or
``svc.add_listener(fn)`` (which returns a function that removes it again). A
listener is a plain callable taking one :class:`Event`; it is called
synchronously where the event happens (the caller's task, or the service's loop
thread for the sync API), so it should be quick and hand slow work off. A
listener that raises never breaks a call: the error is counted
(``listener_errors`` in the metrics) and logged once per listener.

Events of one call share its ``call_id``::

    CallStarted
      CacheHit | DedupJoined            (answered without a provider call)
      Throttled, Attempt, Retry, Fallback, BreakerTransition, ConcurrencyLimitChanged
      CacheStored
    CallEnded                           (always, exactly once per CallStarted)

A call starts once its arguments are valid (a call refused by validation raises
before any event). ``BreakerTransition`` and ``ConcurrencyLimitChanged`` concern a
deployment; they carry the id of the call whose outcome revealed them.
Events carry no API key. ``CallStarted.request`` and ``CallEnded.response`` are
the objects themselves (prompt and reply included): what a listener does with
them is up to it; :meth:`Event.to_dict` leaves them out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from llmrelay._types import ChatRequest

__all__ = [
    "Attempt",
    "BreakerTransition",
    "CacheHit",
    "CacheStored",
    "CallEnded",
    "CallStarted",
    "ConcurrencyLimitChanged",
    "DedupJoined",
    "Event",
    "Fallback",
    "Listener",
    "Retry",
    "Throttled",
]

#: What ``call_id``-bearing events describe: a chat, a streamed chat, or embeddings.
Operation = Literal["chat", "embeddings"]

#: Fields of an event that are objects, not data (left out of ``to_dict``).
_OBJECTS = frozenset({"request", "response", "error"})


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="event"):
    """The base of every event: the call it belongs to and when it happened."""

    #: the call this event belongs to (unique per service; 0: none)
    call_id: int
    #: wall-clock time of the event (``time.time_ns()``)
    time_ns: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready builtins, with the event's name under ``event`` (the request,
        the response and the exception object are left out)."""
        out: dict[str, Any] = {"event": type(self).__struct_config__.tag}
        for name in self.__struct_fields__:
            if name not in _OBJECTS:
                out[name] = getattr(self, name)
        return out


class CallStarted(Event, frozen=True, kw_only=True, tag="call_started"):
    """A call passed validation and selection and starts."""

    operation: Operation
    #: the model as asked (``"openai/gpt-4o-mini"``, or a bare name)
    model: str
    priority: int
    stream: bool = False
    #: the first candidate: its deployment, provider kind and model
    deployment: str | None = None
    provider: str | None = None
    request_model: str | None = None
    #: every candidate, in the order they will be tried (``deployment/model``)
    candidates: list[str] = []
    #: the validated request (prompt included; None for embeddings)
    request: ChatRequest | None = None


class CallEnded(Event, frozen=True, kw_only=True, tag="call_ended"):
    """A call ended: with a response (``ok``) or with the error it raised."""

    operation: Operation
    model: str
    priority: int
    stream: bool = False
    ok: bool
    duration_s: float
    #: the deployment that answered (or, on failure, was tried last)
    deployment: str | None = None
    provider: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    attempts: int = 0
    retries: int = 0
    fallbacks: int = 0
    #: ``"memory"`` or ``"disk"`` when the cache answered
    cache_tier: str | None = None
    #: ``"leader"`` (called the provider for identical calls), ``"follower"`` (joined a
    #: call in flight) or ``"window"`` (answered by a call just completed)
    dedup_role: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: the response's cost when its price is known
    cost_usd: float | None = None
    #: seconds spent queued for a concurrency slot
    queue_wait_s: float = 0.0
    finish_reason: str | None = None
    #: the class name of the error (``"RateLimitError"``), None when ``ok``
    error_type: str | None = None
    error: BaseException | None = None
    response: Any = None


class Attempt(Event, frozen=True, kw_only=True, tag="attempt"):
    """One attempt at one deployment ended (sent, or refused before sending)."""

    #: 1 for the call's first attempt
    index: int
    deployment: str
    provider: str
    model: str
    ok: bool
    #: whether it reached the wire (False: refused by the limiter, a queue timeout...)
    sent: bool
    duration_s: float
    #: when it began (``time.time_ns()``)
    start_ns: int
    error_type: str | None = None
    error: BaseException | None = None
    #: the deployment's breaker state after this attempt, as last seen
    breaker_state: str | None = None


class Retry(Event, frozen=True, kw_only=True, tag="retry"):
    """A failed attempt will be retried on the same deployment after ``wait_s``."""

    deployment: str
    model: str
    #: 1 for the call's first retry
    retry: int
    wait_s: float
    error_type: str


class Fallback(Event, frozen=True, kw_only=True, tag="fallback"):
    """The call moves on to its next candidate."""

    from_deployment: str
    from_model: str
    to_deployment: str
    to_model: str
    error_type: str | None = None


class CacheHit(Event, frozen=True, kw_only=True, tag="cache_hit"):
    """The cache answered the call (no provider call)."""

    tier: Literal["memory", "disk", "shared"]
    model: str


class CacheStored(Event, frozen=True, kw_only=True, tag="cache_stored"):
    """The call's response was written to the cache."""

    model: str
    ttl_s: float | None = None


class DedupJoined(Event, frozen=True, kw_only=True, tag="dedup_joined"):
    """The call joined an identical one in flight, or took a just-completed answer."""

    role: Literal["follower", "window"]
    model: str


class Throttled(Event, frozen=True, kw_only=True, tag="throttled"):
    """The client held the call back before sending it.

    ``reason``: ``"rate_limit"`` (the limiter made it wait ``wait_s``), ``"queued"``
    (no concurrency slot free: it queues), or ``"refused"`` (the limiter has no room
    within the time left: ClientThrottledError).
    """

    deployment: str
    model: str
    reason: Literal["rate_limit", "queued", "refused"]
    wait_s: float = 0.0


class BreakerTransition(Event, frozen=True, kw_only=True, tag="breaker_transition"):
    """A deployment's circuit breaker changed state (``closed``, ``open``, ``half_open``)."""

    deployment: str
    old: str
    new: str


class ConcurrencyLimitChanged(Event, frozen=True, kw_only=True, tag="concurrency_limit"):
    """A deployment's adaptive concurrency limit moved (in whole slots: the limit itself
    moves in fractions, reported when its whole number of slots changes)."""

    deployment: str
    old: int
    new: int


#: What ``on_event`` and ``add_listener`` take.
Listener = Callable[[Event], object]
