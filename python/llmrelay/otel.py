"""OpenTelemetry traces and metrics of a service, built on its events.

    pip install llmrelay[otel]
    LLMService(LLMServiceConfig(..., telemetry=TelemetryConfig(otel=True)))
    # or, with providers of your own:
    svc.add_listener(OpenTelemetryListener(tracer_provider=tp, meter_provider=mp))

Each call is a span named by the GenAI semantic conventions (``chat gpt-4o-mini``,
kind CLIENT, covering every retry and fallback), the child of whatever span is
current where the call is made; each attempt at a deployment is a child span of its
own. Attributes: ``gen_ai.operation.name``, ``gen_ai.provider.name`` (the
deployment's kind: ``openai``, ``anthropic``, ``ollama``...),
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.response.id``,
``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``, the request's ``gen_ai.request.*`` parameters and
``error.type``; and llmrelay's own under ``llmrelay.*`` (priority, deployment, cache
tier, dedup role, retry and fallback counts, breaker state, queue wait, cost).
Retries, fallbacks, throttling, cache and dedup steps, breaker transitions and
limit changes are span events on the call's span. The metrics
``gen_ai.client.operation.duration`` (s) and ``gen_ai.client.token.usage``
(``{token}``, by ``gen_ai.token.type``) go through the metrics API; a reply the
cache or another call supplied used no tokens, so none are recorded for it.

Prompts and replies are recorded (``gen_ai.input.messages``,
``gen_ai.output.messages``, JSON) only with ``capture_content=True``.
This module imports ``opentelemetry``; ``import llmrelay`` never does.
"""

from __future__ import annotations

from typing import Any

import msgspec

from llmrelay.errors import ConfigError
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
    Retry,
    Throttled,
)

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        "invalid telemetry.otel=True: OpenTelemetry is not installed"
        " (pip install llmrelay[otel], or opentelemetry-api)",
        field="telemetry.otel",
    ) from None

__all__ = ["DURATION_BUCKETS_S", "TOKEN_BUCKETS", "OpenTelemetryListener"]

#: The bucket boundaries the GenAI conventions give for the two metrics.
DURATION_BUCKETS_S = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))

_STEP_EVENTS: dict[type[Event], str] = {
    Retry: "llmrelay.retry",
    Fallback: "llmrelay.fallback",
    Throttled: "llmrelay.throttled",
    CacheHit: "llmrelay.cache_hit",
    CacheStored: "llmrelay.cache_stored",
    DedupJoined: "llmrelay.dedup_joined",
    BreakerTransition: "llmrelay.breaker_transition",
    ConcurrencyLimitChanged: "llmrelay.concurrency_limit",
}
_SKIP = frozenset({"event", "call_id", "time_ns"})


def _version() -> str:
    from llmrelay import __version__

    return __version__


def _request_attributes(ev: CallStarted, content: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": ev.operation,
        "llmrelay.model": ev.model,
        "llmrelay.priority": ev.priority,
        "llmrelay.stream": ev.stream,
    }
    if ev.provider is not None:
        attrs["gen_ai.provider.name"] = ev.provider
    if ev.request_model is not None:
        attrs["gen_ai.request.model"] = ev.request_model
    req = ev.request
    if req is None:
        return attrs
    for name, value in (
        ("temperature", req.temperature),
        ("max_tokens", req.max_tokens),
        ("top_p", req.top_p),
        ("seed", req.seed),
        ("stop_sequences", req.stop),
    ):
        if value is not None:
            attrs[f"gen_ai.request.{name}"] = value
    if content:
        attrs["gen_ai.input.messages"] = msgspec.json.encode(
            [_message(m.role, m.content, m.tool_calls) for m in req.messages]
        ).decode()
    return attrs


def _message(role: str, content: Any, tool_calls: Any, finish: str | None = None) -> Any:
    """A message in the conventions' shape: role, parts (text, tool calls)."""
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts.append({"type": "text", "content": content})
    elif content:
        for p in content:
            text = getattr(p, "text", None)
            if text is not None:
                parts.append({"type": "text", "content": text})
            else:
                parts.append({"type": getattr(p, "type", "part")})
    for tc in tool_calls or ():
        parts.append({"type": "tool_call", "id": tc.id, "name": tc.name, "arguments": tc.arguments})
    out: dict[str, Any] = {"role": role, "parts": parts}
    if finish is not None:
        out["finish_reason"] = finish
    return out


def _end_attributes(ev: CallEnded, content: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "llmrelay.attempts": ev.attempts,
        "llmrelay.retry.count": ev.retries,
        "llmrelay.fallback.count": ev.fallbacks,
        "llmrelay.queue.wait_s": ev.queue_wait_s,
    }
    for key, value in (
        ("gen_ai.provider.name", ev.provider),
        ("gen_ai.response.model", ev.response_model),
        ("gen_ai.usage.input_tokens", ev.input_tokens),
        ("gen_ai.usage.output_tokens", ev.output_tokens),
        ("llmrelay.deployment", ev.deployment),
        ("llmrelay.cache.tier", ev.cache_tier),
        ("llmrelay.dedup.role", ev.dedup_role),
        ("llmrelay.cost_usd", ev.cost_usd),
        ("error.type", ev.error_type),
    ):
        if value is not None:
            attrs[key] = value
    if ev.finish_reason is not None:
        attrs["gen_ai.response.finish_reasons"] = [ev.finish_reason]
    resp = ev.response
    rid = getattr(resp, "id", None)
    if rid:
        attrs["gen_ai.response.id"] = rid
    if content and resp is not None and hasattr(resp, "text"):
        attrs["gen_ai.output.messages"] = msgspec.json.encode(
            [_message("assistant", resp.text, resp.tool_calls, resp.finish_reason)]
        ).decode()
    return attrs


def _step_attributes(ev: Event) -> dict[str, Any]:
    return {
        f"llmrelay.{k}": v
        for k, v in ev.to_dict().items()
        if k not in _SKIP and v is not None and not isinstance(v, dict | list)
    }


class OpenTelemetryListener:
    """An event listener that turns a service's events into OpenTelemetry spans and metrics.

    ``tracer_provider`` and ``meter_provider`` default to the global ones (set by your
    OpenTelemetry SDK setup; without one, the API's no-op providers record nothing).
    ``capture_content`` records prompts and replies on the call's span.
    """

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        capture_content: bool = False,
    ) -> None:
        version = _version()
        self.capture_content = capture_content
        self._tracer = _trace.get_tracer("llmrelay", version, tracer_provider=tracer_provider)
        meter = _metrics.get_meter("llmrelay", version, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        #: the open span of each call in flight, with its metric attributes
        self._calls: dict[int, tuple[Any, dict[str, Any]]] = {}

    def __call__(self, ev: Event) -> None:
        """Handle one event (a listener)."""
        if isinstance(ev, CallStarted):
            self._started(ev)
        elif isinstance(ev, Attempt):
            self._attempt(ev)
        elif isinstance(ev, CallEnded):
            self._ended(ev)
        else:
            got = self._calls.get(ev.call_id)
            name = _STEP_EVENTS.get(type(ev))
            if got is not None and name is not None:
                got[0].add_event(name, _step_attributes(ev), timestamp=ev.time_ns)

    def _started(self, ev: CallStarted) -> None:
        attrs = _request_attributes(ev, self.capture_content)
        span = self._tracer.start_span(
            f"{ev.operation} {ev.request_model or ev.model}",
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=ev.time_ns,
        )
        base: dict[str, Any] = {
            k: attrs[k]
            for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")
            if k in attrs
        }
        self._calls[ev.call_id] = (span, base)

    def _attempt(self, ev: Attempt) -> None:
        got = self._calls.get(ev.call_id)
        if got is None:
            return
        ctx = _trace.set_span_in_context(got[0])
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": got[1].get("gen_ai.operation.name", "chat"),
            "gen_ai.provider.name": ev.provider,
            "gen_ai.request.model": ev.model,
            "llmrelay.deployment": ev.deployment,
            "llmrelay.attempt": ev.index,
            "llmrelay.sent": ev.sent,
        }
        if ev.breaker_state is not None:
            attrs["llmrelay.breaker.state"] = ev.breaker_state
        if ev.error_type is not None:
            attrs["error.type"] = ev.error_type
        span = self._tracer.start_span(
            f"{attrs['gen_ai.operation.name']} {ev.model}",
            context=ctx,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=ev.start_ns,
        )
        if not ev.ok:
            span.set_status(Status(StatusCode.ERROR, ev.error_type))
        span.end(end_time=ev.time_ns)

    def _ended(self, ev: CallEnded) -> None:
        got = self._calls.pop(ev.call_id, None)
        if got is None:
            return
        span, base = got
        span.set_attributes(_end_attributes(ev, self.capture_content))
        if not ev.ok:
            span.set_status(Status(StatusCode.ERROR, ev.error_type))
        span.end(end_time=ev.time_ns)
        attrs = dict(base)
        if ev.provider is not None:
            attrs["gen_ai.provider.name"] = ev.provider
        if ev.response_model is not None:
            attrs["gen_ai.response.model"] = ev.response_model
        if ev.error_type is not None:
            attrs["error.type"] = ev.error_type
        self._duration.record(ev.duration_s, attrs)
        if ev.cache_tier is not None or ev.dedup_role in ("follower", "window"):
            return  # no tokens were used for this reply
        for kind, n in (("input", ev.input_tokens), ("output", ev.output_tokens)):
            if n is not None:
                self._tokens.record(n, {**attrs, "gen_ai.token.type": kind})
