"""The events' source: an :class:`Emitter` per engine, a :class:`CallTrace` per call.

The pipeline reports what happens through a call's trace (one call per event site,
``if trace is not None``). A trace exists only while someone listens: a registered
listener, or the ``llmrelay`` logger enabled at INFO. Otherwise every site costs one
``is None`` test, and a call builds no event at all.

The structured log lines are written from the same events (:func:`log_event`): one
line per call at INFO, attempts and the other steps at DEBUG, breaker transitions at
INFO (WARNING when one opens). Each record carries the event's fields under
``record.llmrelay`` (for JSON formatters). Never a key; prompts and replies only with
``TelemetryConfig(log_content=True)``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from llmrelay._types import ChatResponse, EmbeddingResponse
from llmrelay.errors import InvalidRequestError
from llmrelay.events import (
    Attempt,
    BreakerTransition,
    CacheHit,
    CacheStored,
    CallEnded,
    CallStarted,
    ConcurrencyLimitChanged,
    DedupJoined,
    Event,
    Fallback,
    Listener,
    Operation,
    Retry,
    Throttled,
)

if TYPE_CHECKING:
    from llmrelay._orchestrator import CallContext, DeploymentRuntime
    from llmrelay._selection import Candidate
    from llmrelay._types import ChatChunk, ChatRequest

__all__ = ["INFO", "CallTrace", "Emitter", "check_listener", "log_enabled", "log_event"]

log = logging.getLogger("llmrelay")
_INFO = INFO = logging.INFO
#: ``log_enabled(INFO)``: whether the log lines are on (the stdlib's cached level check)
log_enabled = log.isEnabledFor
_DEBUG = logging.DEBUG
_T = TypeVar("_T")
AttemptHook = Callable[["Candidate", BaseException | None, float, bool], None]
#: How much of a prompt or a reply a log line shows with ``log_content``.
_CONTENT_CHARS = 500


def check_listener(fn: Any, field: str = "listener") -> Listener:
    """``fn`` if it can be a listener, else InvalidRequestError naming ``field``."""
    if not callable(fn):
        raise InvalidRequestError(
            f"invalid {field}={fn!r}: expected a callable taking one event", field=field
        )
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        raise InvalidRequestError(
            f"invalid {field}={fn!r}: listeners are called synchronously, where the event"
            " happens; an async function would never run (schedule async work from a plain"
            " function instead)",
            field=field,
        )
    checked: Listener = fn
    return checked


def _error_type(err: BaseException | None) -> str | None:
    return None if err is None else type(err).__name__


class Emitter:
    """The listeners of one engine, and what they were last told about each gate."""

    def __init__(self, count_error: Callable[[], None], *, log_content: bool = False) -> None:
        self.listeners: tuple[Listener, ...] = ()
        self.log_content = log_content
        self._count_error = count_error
        self._told: set[int] = set()
        self._ids = itertools.count(1)
        #: per deployment: (breaker state, concurrency limit) as last reported
        self._gates: dict[str, tuple[str, int]] = {}

    # ---- listeners -------------------------------------------------------------------------

    def add(self, fn: Listener) -> Callable[[], bool]:
        """Register ``fn``; returns a function that removes it (True if it was there)."""
        self.listeners = (*self.listeners, check_listener(fn))
        return lambda: self.remove(fn)

    def remove(self, fn: Listener) -> bool:
        """Unregister ``fn`` (its first registration); whether it was registered."""
        ls = list(self.listeners)
        for i, other in enumerate(ls):
            if other is fn or other == fn:
                del ls[i]
                self.listeners = tuple(ls)
                return True
        return False

    def live(self) -> bool:
        """Whether anyone listens (a listener, or the ``llmrelay`` logger at INFO)."""
        return bool(self.listeners) or log_enabled(_INFO)

    def emit(self, ev: Event) -> None:
        """Give ``ev`` to every listener (an error is counted and logged once), then log it."""
        for fn in self.listeners:
            try:
                fn(ev)
            except Exception as e:
                self._count_error()
                if id(fn) not in self._told:
                    self._told.add(id(fn))
                    log.error(
                        "llmrelay: event listener %r raised %s on a %s event; the call goes"
                        " on (each error is counted as listener_errors; this is logged once"
                        " per listener)",
                        fn,
                        type(e).__name__,
                        type(ev).__name__,
                    )
        log_event(ev, self.log_content)

    # ---- traces ----------------------------------------------------------------------------

    def start(
        self,
        operation: Operation,
        model: str,
        priority: int,
        cands: list[Candidate],
        req: ChatRequest | None,
        *,
        stream: bool = False,
        dedup: bool = False,
    ) -> CallTrace:
        """A call starts: its trace (``CallStarted`` is emitted)."""
        tr = CallTrace(self, next(self._ids), operation, model, priority, stream, cands, dedup)
        first = cands[0] if cands else None
        self.emit(
            CallStarted(
                call_id=tr.id,
                time_ns=time.time_ns(),
                operation=operation,
                model=model,
                priority=priority,
                stream=stream,
                deployment=first.deployment.name if first else None,
                provider=first.deployment.kind if first else None,
                request_model=first.model if first else None,
                candidates=[f"{c.deployment.name}/{c.model}" for c in cands],
                request=req,
            )
        )
        return tr

    def watch(self, runtimes: Mapping[str, DeploymentRuntime]) -> None:
        """Remember each gate's breaker state and limit as they are at start."""
        for name, rt in runtimes.items():
            self._gates[name] = (rt.breaker.state, int(rt.scheduler.limit))

    def gate(self, call_id: int, rt: DeploymentRuntime) -> str:
        """Report a change of ``rt``'s breaker state or concurrency limit; its state."""
        name = rt.deployment.name
        state, limit = rt.breaker.state, int(rt.scheduler.limit)
        old = self._gates.get(name)
        if old == (state, limit):
            return state
        self._gates[name] = (state, limit)
        if old is None:
            return state
        now = time.time_ns()
        if old[0] != state:
            self.emit(
                BreakerTransition(
                    call_id=call_id, time_ns=now, deployment=name, old=old[0], new=state
                )
            )
        if old[1] != limit:
            self.emit(
                ConcurrencyLimitChanged(
                    call_id=call_id, time_ns=now, deployment=name, old=old[1], new=limit
                )
            )
        return state

    def breaker_state(self, deployment: str) -> str | None:
        """The breaker state of ``deployment`` as last seen."""
        seen = self._gates.get(deployment)
        return None if seen is None else seen[0]


class CallTrace:
    """What one call did so far; each method is one event site of the pipeline."""

    __slots__ = (
        "_dedup",
        "_ended",
        "attempts",
        "cache_tier",
        "cands",
        "ctx",
        "dedup_role",
        "deployment",
        "emitter",
        "fallbacks",
        "id",
        "model",
        "operation",
        "priority",
        "response",
        "retries",
        "started",
        "stream",
        "wrapped",
    )

    def __init__(
        self,
        emitter: Emitter,
        call_id: int,
        operation: Operation,
        model: str,
        priority: int,
        stream: bool,
        cands: list[Candidate],
        dedup: bool,
    ) -> None:
        self.emitter = emitter
        self.id = call_id
        self.operation: Operation = operation
        self.model = model
        self.priority = priority
        self.stream = stream
        self.cands = cands
        self._dedup = dedup
        self.started = time.perf_counter()
        self.ctx: CallContext | None = None
        self.attempts = 0
        self.retries = 0
        self.fallbacks = 0
        self.cache_tier: str | None = None
        self.dedup_role: str | None = None
        self.deployment: Candidate | None = None
        self.response: ChatResponse | EmbeddingResponse | None = None
        self._ended = False
        self.wrapped = False  # the call runs inside :meth:`wrap`

    # ---- event sites -----------------------------------------------------------------------

    def hooked(self, ctx: CallContext, hook: AttemptHook) -> AttemptHook:
        """Bind the call's orchestration context; ``hook`` wrapped to report each attempt."""
        ctx.trace = self
        self.ctx = ctx

        def on_attempt_end(
            cand: Candidate, err: BaseException | None, latency: float, sent: bool
        ) -> None:
            hook(cand, err, latency, sent)
            self.attempt(cand, err, latency, sent)

        return on_attempt_end

    def attempt(
        self, cand: Candidate, err: BaseException | None, latency: float, sent: bool
    ) -> None:
        self.attempts += 1
        self.deployment = cand
        dep = cand.deployment
        now = time.time_ns()
        self.emitter.emit(
            Attempt(
                call_id=self.id,
                time_ns=now,
                index=self.attempts,
                deployment=dep.name,
                provider=dep.kind,
                model=cand.model,
                ok=err is None,
                sent=sent,
                duration_s=latency,
                start_ns=now - int(latency * 1e9),
                error_type=_error_type(err),
                error=err,
                breaker_state=self.emitter.breaker_state(dep.name),
            )
        )

    def retry(self, cand: Candidate, n: int, wait_s: float, err: BaseException) -> None:
        self.retries = n
        self.emitter.emit(
            Retry(
                call_id=self.id,
                time_ns=time.time_ns(),
                deployment=cand.deployment.name,
                model=cand.model,
                retry=n,
                wait_s=wait_s,
                error_type=type(err).__name__,
            )
        )

    def fallback(self, prev: Candidate, cand: Candidate, err: BaseException | None) -> None:
        self.fallbacks += 1
        self.emitter.emit(
            Fallback(
                call_id=self.id,
                time_ns=time.time_ns(),
                from_deployment=prev.deployment.name,
                from_model=prev.model,
                to_deployment=cand.deployment.name,
                to_model=cand.model,
                error_type=_error_type(err),
            )
        )

    def throttled(
        self, cand: Candidate, reason: Literal["rate_limit", "queued", "refused"], wait_s: float
    ) -> None:
        self.emitter.emit(
            Throttled(
                call_id=self.id,
                time_ns=time.time_ns(),
                deployment=cand.deployment.name,
                model=cand.model,
                reason=reason,
                wait_s=wait_s,
            )
        )

    def gate(self, rt: DeploymentRuntime) -> None:
        self.emitter.gate(self.id, rt)

    def cache_hit(self, tier: Literal["memory", "disk", "shared"], resp: ChatResponse) -> None:
        self.cache_tier = tier
        self.response = resp
        self.emitter.emit(
            CacheHit(call_id=self.id, time_ns=time.time_ns(), tier=tier, model=self.model)
        )

    def cache_stored(self, ttl_s: float | None) -> None:
        self.emitter.emit(
            CacheStored(call_id=self.id, time_ns=time.time_ns(), model=self.model, ttl_s=ttl_s)
        )

    def dedup(self, role: Literal["follower", "window"]) -> None:
        self.dedup_role = role
        self.emitter.emit(
            DedupJoined(call_id=self.id, time_ns=time.time_ns(), role=role, model=self.model)
        )

    def processed(self, resp: ChatResponse | EmbeddingResponse) -> None:
        """The response as the pipeline made it (a stream's accumulated reply)."""
        self.response = resp

    # ---- the end ---------------------------------------------------------------------------

    async def wrap(self, aw: Awaitable[_T]) -> _T:
        """Await ``aw`` (the rest of the call); ``CallEnded`` whichever way it ends."""
        self.wrapped = True
        try:
            result = await aw
        except BaseException as e:
            self.end(None, e)
            raise
        got = result[0] if isinstance(result, tuple) else result
        self.end(got if isinstance(got, ChatResponse | EmbeddingResponse) else None, None)
        return result

    async def wrap_stream(self, chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
        """Pass ``chunks`` through; ``CallEnded`` when the stream ends, fails or is dropped."""
        last: dict[str, Any] = {}
        try:
            async for chunk in chunks:
                if chunk.usage is not None:
                    last["usage"] = chunk.usage
                if chunk.finish_reason:
                    last["finish_reason"] = chunk.finish_reason
                if chunk.model:
                    last["model"] = chunk.model
                yield chunk
        except BaseException as e:
            self.end(None, e)
            raise
        self.end(self.response, None, last)

    def end(
        self,
        resp: ChatResponse | EmbeddingResponse | None,
        err: BaseException | None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """Emit ``CallEnded`` (once)."""
        if self._ended:
            return
        self._ended = True
        emitter = self.emitter
        usage = getattr(resp, "usage", None) if resp is not None else None
        if usage is None and summary:
            usage = summary.get("usage")
        cand = self.deployment or (self.cands[0] if self.cands else None)
        deployment = cand.deployment.name if cand else None
        if self.cache_tier is not None or self.dedup_role in ("follower", "window"):
            deployment = getattr(resp, "provider", None) or deployment
        cost = getattr(resp, "cost", None)
        role = self.dedup_role
        if self._dedup and self.attempts and role in (None, "follower"):
            role = "leader"  # led the identical calls (or took over from a leader gone)
        if isinstance(err, GeneratorExit | asyncio.CancelledError):
            err_type: str | None = "cancelled"
        else:
            err_type = _error_type(err)
        emitter.emit(
            CallEnded(
                call_id=self.id,
                time_ns=time.time_ns(),
                operation=self.operation,
                model=self.model,
                priority=self.priority,
                stream=self.stream,
                ok=err is None,
                duration_s=time.perf_counter() - self.started,
                deployment=deployment,
                provider=cand.deployment.kind if cand else None,
                request_model=self.cands[0].model if self.cands else None,
                response_model=(getattr(resp, "model", None) or (summary or {}).get("model"))
                if err is None
                else None,
                attempts=self.attempts,
                retries=self.retries,
                fallbacks=self.fallbacks,
                cache_tier=self.cache_tier,
                dedup_role=role,
                input_tokens=getattr(usage, "prompt_tokens", None),
                output_tokens=getattr(usage, "completion_tokens", None),
                cost_usd=getattr(cost, "total_usd", None),
                queue_wait_s=self.ctx.queue_wait_s if self.ctx is not None else 0.0,
                finish_reason=getattr(resp, "finish_reason", None)
                or (summary or {}).get("finish_reason"),
                error_type=err_type,
                error=err,
                response=resp,
            )
        )


# ---- the log lines -------------------------------------------------------------------------


def _short(text: Any) -> str:
    s = str(text)
    return s if len(s) <= _CONTENT_CHARS else s[:_CONTENT_CHARS] + "..."


def _call_line(ev: CallEnded, content: bool) -> tuple[str, dict[str, Any]]:
    fields = ev.to_dict()
    parts = [
        f"llmrelay call id={ev.call_id} op={ev.operation}{' stream' if ev.stream else ''}",
        f"model={ev.model} deployment={ev.deployment or '-'}",
        f"status={'ok' if ev.ok else 'error'}",
        f"duration_ms={ev.duration_s * 1000:.1f}",
        f"attempts={ev.attempts} retries={ev.retries} fallbacks={ev.fallbacks}",
    ]
    if ev.cache_tier:
        parts.append(f"cache={ev.cache_tier}")
    if ev.dedup_role:
        parts.append(f"dedup={ev.dedup_role}")
    if ev.input_tokens is not None or ev.output_tokens is not None:
        parts.append(f"tokens_in={ev.input_tokens} tokens_out={ev.output_tokens}")
    if ev.cost_usd is not None:
        parts.append(f"cost_usd={ev.cost_usd:.6f}")
    if ev.error_type:
        parts.append(f"error={ev.error_type}")
    if content:
        reply = getattr(ev.response, "text", None)
        if reply is not None:
            fields["reply"] = reply
            parts.append(f"reply={_short(reply)!r}")
    return " ".join(parts), fields


def _started_line(ev: CallStarted, content: bool) -> tuple[str, dict[str, Any]]:
    fields = ev.to_dict()
    line = (
        f"llmrelay start id={ev.call_id} op={ev.operation}{' stream' if ev.stream else ''}"
        f" model={ev.model} priority={ev.priority}"
    )
    if content and ev.request is not None:
        msgs = [m.to_dict() for m in ev.request.messages]
        fields["messages"] = msgs
        line += f" messages={_short(msgs)!r}"
    return line, fields


def _step_line(ev: Event) -> str:
    d = ev.to_dict()
    name = d.pop("event")
    d.pop("time_ns")
    call_id = d.pop("call_id")
    body = " ".join(f"{k}={v}" for k, v in d.items() if v is not None)
    return f"llmrelay {name} id={call_id} {body}"


def log_event(ev: Event, content: bool = False) -> None:
    """Write ``ev`` to the ``llmrelay`` logger at its level (if that level is enabled)."""
    if isinstance(ev, CallEnded):
        if log.isEnabledFor(_INFO):
            line, fields = _call_line(ev, content)
            log.info(line, extra={"llmrelay": fields})
        return
    if isinstance(ev, BreakerTransition):
        level = logging.WARNING if ev.new == "open" else _INFO
        if log.isEnabledFor(level):
            log.log(level, _step_line(ev), extra={"llmrelay": ev.to_dict()})
        return
    if not log.isEnabledFor(_DEBUG):
        return
    if isinstance(ev, CallStarted):
        line, fields = _started_line(ev, content)
        log.debug(line, extra={"llmrelay": fields})
        return
    log.debug(_step_line(ev), extra={"llmrelay": ev.to_dict()})
