"""OpenTelemetry (llmrelay.otel): spans and metrics checked with the SDK's in-memory exporters."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llmrelay import (
    LLMService,
    LLMServiceConfig,
    ModelSelectionStrategy,
    OrchestratorConfig,
    TelemetryConfig,
)
from llmrelay.errors import AuthenticationError
from llmrelay.otel import DURATION_BUCKETS_S, OpenTelemetryListener
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory, RecordingSleep


class Otel:
    """An SDK tracer and meter provider with in-memory exporters, and a listener on them."""

    def __init__(self, capture_content: bool = False) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.listener = OpenTelemetryListener(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            capture_content=capture_content,
        )

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def call_spans(self) -> list[ReadableSpan]:
        """The calls' spans (no llmrelay parent), in the order they ended."""
        ids = {s.context.span_id for s in self.finished()}
        return [s for s in self.finished() if s.parent is None or s.parent.span_id not in ids]

    def attempt_spans(self, call: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.parent and s.parent.span_id == call.context.span_id]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        out.extend(m.data.data_points)
        return out


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_plain_call_span_and_attempt_span(make_config: ConfigFactory, otel: Otel) -> None:
    async with LLMService(make_config(), on_event=otel.listener) as svc:
        r = await svc.achat("hello", priority=1, temperature=0.5, max_tokens=30, seed=7)
    (call,) = otel.call_spans()
    (att,) = otel.attempt_spans(call)
    assert call.name == att.name == "chat gpt-4o-mini"
    assert call.kind == att.kind == SpanKind.CLIENT
    assert call.status.status_code == StatusCode.UNSET
    a = _attrs(call)
    assert a == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 30,
        "gen_ai.request.seed": 7,
        "gen_ai.response.model": r.model,
        "gen_ai.response.id": r.id,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": r.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": r.usage.completion_tokens,
        "llmrelay.model": "openai/gpt-4o-mini",
        "llmrelay.priority": 1,
        "llmrelay.stream": False,
        "llmrelay.deployment": "openai",
        "llmrelay.attempts": 1,
        "llmrelay.retry.count": 0,
        "llmrelay.fallback.count": 0,
        "llmrelay.queue.wait_s": a["llmrelay.queue.wait_s"],
        "llmrelay.dedup.role": "leader",
        "llmrelay.cost_usd": r.cost.total_usd if r.cost else None,
    }
    assert a["llmrelay.queue.wait_s"] >= 0 and a["llmrelay.cost_usd"] > 0
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    assert _attrs(att) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "llmrelay.deployment": "openai",
        "llmrelay.attempt": 1,
        "llmrelay.sent": True,
        "llmrelay.breaker.state": "closed",
    }
    assert call.start_time <= att.start_time <= att.end_time <= call.end_time
    assert att.context.trace_id == call.context.trace_id


async def test_metrics_duration_and_tokens(make_config: ConfigFactory, otel: Otel) -> None:
    async with LLMService(make_config(), on_event=otel.listener) as svc:
        r = await svc.achat("count me", temperature=0)
        await svc.achat("count me", temperature=0)  # a cache hit: no tokens used
    (dur,) = otel.points("gen_ai.client.operation.duration")
    assert dur.count == 2
    assert dict(dur.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": r.model,
    }
    assert tuple(dur.explicit_bounds) == DURATION_BUCKETS_S
    tokens = {
        p.attributes["gen_ai.token.type"]: p for p in otel.points("gen_ai.client.token.usage")
    }
    assert set(tokens) == {"input", "output"}
    assert tokens["input"].count == 1 and tokens["input"].sum == r.usage.prompt_tokens
    assert tokens["output"].count == 1 and tokens["output"].sum == r.usage.completion_tokens
    hit = otel.call_spans()[1]
    assert _attrs(hit)["llmrelay.cache.tier"] == "memory"
    assert otel.attempt_spans(hit) == []
    assert [e.name for e in hit.events] == ["llmrelay.cache_hit"]
    assert dict(hit.events[0].attributes or {}) == {
        "llmrelay.tier": "memory",
        "llmrelay.model": "openai/gpt-4o-mini",
    }
    first = otel.call_spans()[0]
    assert [e.name for e in first.events] == ["llmrelay.cache_stored"]


async def test_retries_are_child_spans_and_events(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    recording_sleep: RecordingSleep,
    otel: Otel,
) -> None:
    fakes["openai"].inject("rate_limit", times=2, retry_after=2.0)
    async with LLMService(make_config(), sleep=recording_sleep, on_event=otel.listener) as svc:
        await svc.achat("retry me")
    (call,) = otel.call_spans()
    atts = sorted(otel.attempt_spans(call), key=lambda s: _attrs(s)["llmrelay.attempt"])
    assert [_attrs(s)["llmrelay.attempt"] for s in atts] == [1, 2, 3]
    assert [s.status.status_code for s in atts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert [_attrs(s).get("error.type") for s in atts] == ["RateLimitError", "RateLimitError", None]
    assert _attrs(call)["llmrelay.retry.count"] == 2 and _attrs(call)["llmrelay.attempts"] == 3
    assert "error.type" not in _attrs(call)
    retries = [e for e in call.events if e.name == "llmrelay.retry"]
    assert [dict(e.attributes or {})["llmrelay.retry"] for e in retries] == [1, 2]
    assert [dict(e.attributes or {})["llmrelay.wait_s"] for e in retries] == recording_sleep.delays


async def test_fallback_names_the_answering_provider(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    recording_sleep: RecordingSleep,
    otel: Otel,
) -> None:
    fakes["openai"].inject("unavailable")
    cfg = make_config(
        orchestrator=OrchestratorConfig(max_retries=0),
        selection=ModelSelectionStrategy(
            fallbacks={"openai/gpt-4o-mini": ["claude/claude-haiku-4-5"]}
        ),
    )
    async with LLMService(cfg, sleep=recording_sleep, on_event=otel.listener) as svc:
        await svc.achat("fall back")
    (call,) = otel.call_spans()
    a = _attrs(call)
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.provider.name"] == "anthropic" and a["llmrelay.deployment"] == "claude"
    assert a["llmrelay.fallback.count"] == 1
    atts = sorted(otel.attempt_spans(call), key=lambda s: _attrs(s)["llmrelay.attempt"])
    assert [(_attrs(s)["gen_ai.provider.name"], s.name) for s in atts] == [
        ("openai", "chat gpt-4o-mini"),
        ("anthropic", "chat claude-haiku-4-5"),
    ]
    (fb,) = [e for e in call.events if e.name == "llmrelay.fallback"]
    assert dict(fb.attributes or {})["llmrelay.to_deployment"] == "claude"
    (dur,) = otel.points("gen_ai.client.operation.duration")
    assert dur.attributes["gen_ai.provider.name"] == "anthropic"


async def test_error_sets_status_and_error_type(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], otel: Otel
) -> None:
    fakes["openai"].inject("auth", times=1)
    async with LLMService(make_config(), on_event=otel.listener) as svc:
        with pytest.raises(AuthenticationError):
            await svc.achat("no")
    (call,) = otel.call_spans()
    assert call.status.status_code == StatusCode.ERROR
    a = _attrs(call)
    assert a["error.type"] == "AuthenticationError"
    assert "gen_ai.usage.input_tokens" not in a and "gen_ai.response.model" not in a
    (att,) = otel.attempt_spans(call)
    assert att.status.status_code == StatusCode.ERROR
    assert _attrs(att)["error.type"] == "AuthenticationError"
    (dur,) = otel.points("gen_ai.client.operation.duration")
    assert dur.attributes["error.type"] == "AuthenticationError"
    assert otel.points("gen_ai.client.token.usage") == []


async def test_stream_span(make_config: ConfigFactory, otel: Otel) -> None:
    async with LLMService(make_config(), on_event=otel.listener) as svc:
        chunks = [c async for c in svc.astream("stream it")]
    (call,) = otel.call_spans()
    a = _attrs(call)
    usage = chunks[-1].usage
    assert usage is not None
    assert a["llmrelay.stream"] is True and a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert len(otel.attempt_spans(call)) == 1


async def test_call_span_is_a_child_of_the_callers_span(
    make_config: ConfigFactory, otel: Otel
) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    async with LLMService(make_config(), on_event=otel.listener) as svc:
        with tracer.start_as_current_span("handler") as outer:
            await svc.achat("inside")
    chats = [s for s in otel.finished() if s.name == "chat gpt-4o-mini"]
    ids = {s.context.span_id for s in chats}
    (call,) = [s for s in chats if s.parent is None or s.parent.span_id not in ids]
    parent = call.parent
    assert parent is not None and parent.span_id == outer.get_span_context().span_id
    assert len(chats) == 2  # and its attempt


async def test_content_only_when_enabled(make_config: ConfigFactory) -> None:
    o = Otel(capture_content=True)
    async with LLMService(make_config(), on_event=o.listener) as svc:
        r = await svc.achat(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
        )
    (call,) = o.call_spans()
    a = _attrs(call)
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
    ]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": r.text}],
            "finish_reason": "stop",
        }
    ]


def test_config_otel_uses_the_listener_and_import_stays_clean(
    make_config: ConfigFactory,
) -> None:
    cfg = make_config(telemetry=TelemetryConfig(otel=True, capture_content=True))
    with LLMService(cfg) as svc:
        (listener,) = svc._engine.events.listeners
        assert isinstance(listener, OpenTelemetryListener) and listener.capture_content
        assert svc.chat("through the global (no-op) providers").text
    assert LLMServiceConfig.from_dict({"telemetry": {"otel": True}}).telemetry.otel
    code = (
        "import sys, llmrelay\n"
        "from llmrelay import LLMService, LLMServiceConfig, ProviderConfig\n"
        "cfg = LLMServiceConfig(providers=[ProviderConfig(name='e', kind='echo')],"
        " default_model='e/echo')\n"
        "with LLMService(cfg, on_event=lambda ev: None) as svc:\n"
        "    svc.chat('hi')\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_opentelemetry_a_config_error_names_the_field() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "from llmrelay import LLMService, LLMServiceConfig, ProviderConfig, TelemetryConfig\n"
        "from llmrelay.errors import ConfigError\n"
        "cfg = LLMServiceConfig(providers=[ProviderConfig(name='e', kind='echo')],"
        " default_model='e/echo', telemetry=TelemetryConfig(otel=True))\n"
        "try:\n"
        "    LLMService(cfg)\n"
        "except ConfigError as e:\n"
        "    assert e.field == 'telemetry.otel' and 'llmrelay[otel]' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_no_span_is_left_open(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], otel: Otel
) -> None:
    fakes["openai"].inject("auth", times=1)
    async with LLMService(make_config(), on_event=otel.listener) as svc:
        with pytest.raises(AuthenticationError):
            await svc.achat("fails")
        await svc.achat("works", temperature=0)
        await svc.achat("works", temperature=0)
        agen = svc.astream("dropped " * 10)
        await agen.__anext__()
        await agen.aclose()
        for _ in range(20):
            if not otel.listener._calls:
                break
            await asyncio.sleep(0)
    assert otel.listener._calls == {}
    assert len(otel.call_spans()) == 4
    dropped = otel.call_spans()[-1]
    assert _attrs(dropped)["error.type"] == "cancelled"
