"""Events (llmrelay.events): what each call reports, field by field, and the log lines."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any

import pytest

from llmrelay import (
    CacheConfig,
    CircuitBreakerConfig,
    LLMService,
    ModelSelectionStrategy,
    OrchestratorConfig,
    ProviderConfig,
    RateLimitConfig,
    TelemetryConfig,
    _core,
)
from llmrelay.errors import (
    AuthenticationError,
    InvalidRequestError,
    LLMRelayError,
    ProviderUnavailableError,
)
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
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory, RecordingSleep


class Recorder:
    """A listener that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, ev: Event) -> None:
        self.events.append(ev)

    def kinds(self) -> list[str]:
        """The events' names in order, without the deployment-level gate events."""
        return [
            type(e).__name__
            for e in self.events
            if not isinstance(e, BreakerTransition | ConcurrencyLimitChanged)
        ]

    def of(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def one(self, cls: type[Any]) -> Any:
        got = self.of(cls)
        assert len(got) == 1, self.kinds()
        return got[0]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


async def test_plain_call_reports_start_attempt_end(
    make_config: ConfigFactory, rec: Recorder
) -> None:
    async with LLMService(make_config(), on_event=rec) as svc:
        r = await svc.achat("hello events", priority=1, max_tokens=20)
    assert rec.kinds() == ["CallStarted", "Attempt", "CallEnded"]
    start, att, end = rec.events
    assert start.call_id == att.call_id == end.call_id >= 1
    assert isinstance(start, CallStarted)
    assert start.operation == "chat" and start.model == "openai/gpt-4o-mini"
    assert start.priority == 1 and start.stream is False
    assert (start.deployment, start.provider, start.request_model) == (
        "openai",
        "openai",
        "gpt-4o-mini",
    )
    assert start.candidates == ["openai/gpt-4o-mini"]
    assert start.request is not None and start.request.max_tokens == 20
    assert isinstance(att, Attempt)
    assert (att.index, att.deployment, att.provider, att.model) == (
        1,
        "openai",
        "openai",
        "gpt-4o-mini",
    )
    assert att.ok and att.sent and att.error is None and att.error_type is None
    assert 0 < att.duration_s < 5 and att.start_ns <= att.time_ns
    assert att.breaker_state == "closed"
    assert isinstance(end, CallEnded)
    assert end.ok and end.error is None and end.error_type is None
    assert end.response is r
    assert (end.deployment, end.provider, end.request_model, end.response_model) == (
        "openai",
        "openai",
        "gpt-4o-mini",
        r.model,
    )
    assert (end.attempts, end.retries, end.fallbacks) == (1, 0, 0)
    assert end.cache_tier is None and end.dedup_role is None  # not cacheable: no dedup
    assert (end.input_tokens, end.output_tokens) == (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
    )
    assert end.finish_reason == r.finish_reason
    assert r.cost is not None and end.cost_usd == r.cost.total_usd > 0  # priced from the table
    assert end.duration_s >= att.duration_s and end.queue_wait_s >= 0
    assert start.time_ns <= att.time_ns <= end.time_ns
    d = end.to_dict()
    assert d["event"] == "call_ended" and "response" not in d and "error" not in d


async def test_cache_store_then_memory_and_disk_hits(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    cfg = make_config(cache=CacheConfig(disk_path=str(tmp_path / "c")))
    first = Recorder()
    async with LLMService(cfg, on_event=first) as svc:
        await svc.achat("cache me", temperature=0)
        assert first.kinds() == ["CallStarted", "Attempt", "CacheStored", "CallEnded"]
        assert first.one(CacheStored).model == "openai/gpt-4o-mini"
        assert first.one(CallEnded).dedup_role == "leader"  # dedup applies to cacheable calls
        first.events.clear()
        r = await svc.achat("cache me", temperature=0)
        assert r.cached
        assert first.kinds() == ["CallStarted", "CacheHit", "CallEnded"]
        assert first.one(CacheHit).tier == "memory"
        end = first.one(CallEnded)
        assert end.cache_tier == "memory" and end.attempts == 0 and end.ok
        assert end.deployment == "openai" and end.response is r
    disk = Recorder()
    async with LLMService(cfg, on_event=disk) as svc:  # a fresh memory tier
        await svc.achat("cache me", temperature=0)
    assert disk.kinds() == ["CallStarted", "CacheHit", "CallEnded"]
    assert disk.one(CacheHit).tier == "disk" and disk.one(CallEnded).cache_tier == "disk"
    assert fakes["openai"].request_count == 1


def test_sync_memory_hit_reports_its_end(make_config: ConfigFactory, rec: Recorder) -> None:
    with LLMService(make_config(), on_event=rec) as svc:
        svc.chat("sync", temperature=0)
        rec.events.clear()
        svc.chat("sync", temperature=0)
    assert rec.kinds() == ["CallStarted", "CacheHit", "CallEnded"]
    assert rec.one(CallEnded).cache_tier == "memory"


async def test_retries_report_each_attempt_and_wait(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    recording_sleep: RecordingSleep,
    rec: Recorder,
) -> None:
    fakes["openai"].inject("rate_limit", times=2, retry_after=2.0)
    async with LLMService(make_config(), sleep=recording_sleep, on_event=rec) as svc:
        await svc.achat("retry me")
    assert rec.kinds() == [
        "CallStarted",
        "Attempt",
        "Retry",
        "Attempt",
        "Retry",
        "Attempt",
        "CallEnded",
    ]
    attempts = rec.of(Attempt)
    assert [a.index for a in attempts] == [1, 2, 3]
    assert [a.ok for a in attempts] == [False, False, True]
    assert [a.error_type for a in attempts] == ["RateLimitError", "RateLimitError", None]
    retries = rec.of(Retry)
    assert [r.retry for r in retries] == [1, 2]
    assert [r.wait_s for r in retries] == recording_sleep.delays
    assert all(r.wait_s >= 2.0 and r.error_type == "RateLimitError" for r in retries)
    assert all(r.deployment == "openai" and r.model == "gpt-4o-mini" for r in retries)
    end = rec.one(CallEnded)
    assert (end.ok, end.attempts, end.retries, end.fallbacks) == (True, 3, 2, 0)


async def test_fallback_reports_the_move(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    recording_sleep: RecordingSleep,
    rec: Recorder,
) -> None:
    fakes["openai"].inject("unavailable")
    cfg = make_config(
        orchestrator=OrchestratorConfig(max_retries=1),
        selection=ModelSelectionStrategy(
            fallbacks={"openai/gpt-4o-mini": ["claude/claude-haiku-4-5"]}
        ),
    )
    async with LLMService(cfg, sleep=recording_sleep, on_event=rec) as svc:
        r = await svc.achat("fall back")
    assert r.provider == "claude"
    assert rec.kinds() == [
        "CallStarted",
        "Attempt",
        "Retry",
        "Attempt",
        "Fallback",
        "Attempt",
        "CallEnded",
    ]
    assert rec.one(CallStarted).candidates == [
        "openai/gpt-4o-mini",
        "claude/claude-haiku-4-5",
    ]
    fb = rec.one(Fallback)
    assert (fb.from_deployment, fb.from_model, fb.to_deployment, fb.to_model) == (
        "openai",
        "gpt-4o-mini",
        "claude",
        "claude-haiku-4-5",
    )
    assert fb.error_type == "ProviderUnavailableError"
    assert [a.deployment for a in rec.of(Attempt)] == ["openai", "openai", "claude"]
    assert rec.of(Attempt)[2].provider == "anthropic"
    end = rec.one(CallEnded)
    assert (end.deployment, end.provider, end.request_model) == (
        "claude",
        "anthropic",
        "gpt-4o-mini",
    )
    assert (end.attempts, end.retries, end.fallbacks) == (3, 1, 1)


async def test_error_ends_the_call_with_its_exception(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], rec: Recorder
) -> None:
    fakes["openai"].inject("auth", times=1)
    async with LLMService(make_config(), on_event=rec) as svc:
        with pytest.raises(AuthenticationError) as info:
            await svc.achat("no")
    assert rec.kinds() == ["CallStarted", "Attempt", "CallEnded"]
    att = rec.one(Attempt)
    assert not att.ok and att.sent and att.error is info.value
    end = rec.one(CallEnded)
    assert not end.ok and end.error is info.value and end.error_type == "AuthenticationError"
    assert end.response is None and end.response_model is None and end.input_tokens is None


async def test_stream_reports_usage_and_cache_replay(
    make_config: ConfigFactory, rec: Recorder
) -> None:
    async with LLMService(make_config(), on_event=rec) as svc:
        chunks = [c async for c in svc.astream("stream it", temperature=0)]
        assert rec.kinds() == ["CallStarted", "Attempt", "CacheStored", "CallEnded"]
        start, end = rec.one(CallStarted), rec.one(CallEnded)
        assert start.stream and end.stream and end.ok
        last = chunks[-1]
        assert last.usage is not None
        assert (end.input_tokens, end.output_tokens) == (
            last.usage.prompt_tokens,
            last.usage.completion_tokens,
        )
        assert end.finish_reason == "stop" and end.dedup_role is None  # streams never join
        assert end.response.text == "".join(c.text or "" for c in chunks)
        rec.events.clear()
        _ = [c async for c in svc.astream("stream it", temperature=0)]
        assert rec.kinds() == ["CallStarted", "CacheHit", "CallEnded"]
        assert rec.one(CallEnded).cache_tier == "memory"


async def test_stream_failure_and_abandon_end_the_call(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], rec: Recorder
) -> None:
    fakes["openai"].inject("auth", times=1)
    async with LLMService(make_config(), on_event=rec) as svc:
        with pytest.raises(AuthenticationError):
            _ = [c async for c in svc.astream("fails")]
        assert rec.one(CallEnded).error_type == "AuthenticationError"
        rec.events.clear()
        agen = svc.astream("a long answer " * 20)
        await agen.__anext__()
        await agen.aclose()
        for _ in range(20):  # the inner generators are finalized by the loop
            if rec.of(CallEnded):
                break
            await asyncio.sleep(0)
        end = rec.one(CallEnded)
        assert not end.ok and end.error_type == "cancelled"


async def test_dedup_follower_and_leader(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], rec: Recorder
) -> None:
    fakes["openai"].inject("slow", times=1, delay_s=0.3)
    async with LLMService(make_config(), on_event=rec) as svc:
        a, b = await asyncio.gather(
            svc.achat("same", temperature=0), svc.achat("same", temperature=0)
        )
    assert fakes["openai"].request_count == 1
    ends = {e.call_id: e for e in rec.of(CallEnded)}
    joined = rec.one(DedupJoined)
    assert joined.role == "follower" and joined.model == "openai/gpt-4o-mini"
    assert ends[joined.call_id].dedup_role == "follower"
    (leader,) = [e for e in ends.values() if e.call_id != joined.call_id]
    assert leader.dedup_role == "leader" and leader.attempts == 1
    assert ends[joined.call_id].attempts == 0 and a.text == b.text


async def test_breaker_transitions(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    recording_sleep: RecordingSleep,
    rec: Recorder,
) -> None:
    clock = _core.ManualClock()
    cfg = make_config(
        orchestrator=OrchestratorConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(minimum_calls=2, window_size=2, open_duration_s=10),
    )
    fakes["openai"].inject("unavailable")
    async with LLMService(cfg, clock=clock, sleep=recording_sleep, on_event=rec) as svc:
        for _ in range(2):
            with pytest.raises(ProviderUnavailableError):
                await svc.achat("x")
        fakes["openai"].clear_faults()
        clock.advance(10.5)
        await svc.achat("x")
    moves = [(t.deployment, t.old, t.new) for t in rec.of(BreakerTransition)]
    assert moves == [
        ("openai", "closed", "open"),
        ("openai", "open", "half_open"),
        ("openai", "half_open", "closed"),
    ]
    opened = rec.of(BreakerTransition)[0]
    assert opened.call_id == rec.of(CallStarted)[1].call_id  # the call whose failure opened it


async def test_throttle_by_the_rate_limiter(make_config: ConfigFactory, rec: Recorder) -> None:
    clock = _core.ManualClock()
    slept: list[float] = []

    async def sleep(d: float) -> None:
        slept.append(d)
        clock.advance(d)

    cfg = make_config(
        provider_kw={"openai": {"rate_limit": RateLimitConfig(requests_per_minute=60, burst=1)}}
    )
    async with LLMService(cfg, clock=clock, sleep=sleep, on_event=rec) as svc:
        await svc.achat("one")
        await svc.achat("two")
    (th,) = rec.of(Throttled)
    assert (th.deployment, th.model, th.reason) == ("openai", "gpt-4o-mini", "rate_limit")
    assert th.wait_s == pytest.approx(1.0, abs=0.05) and slept and slept[0] == th.wait_s
    assert th.call_id == rec.of(CallStarted)[1].call_id


async def test_concurrency_limit_change(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    recording_sleep: RecordingSleep,
    rec: Recorder,
) -> None:
    fakes["openai"].inject("rate_limit", times=3, retry_after=0.01)
    cfg = make_config(orchestrator=OrchestratorConfig(max_concurrency=16, max_retries=3))
    async with LLMService(cfg, sleep=recording_sleep, on_event=rec) as svc:
        await svc.achat("adapt")
        limit = svc._engine.orchestrator.runtimes["openai"].scheduler.limit
    changes = rec.of(ConcurrencyLimitChanged)
    assert changes, "a 429 shrinks the adaptive limit"
    assert changes[0].deployment == "openai" and changes[0].old == 16
    assert changes[0].new < 16 and changes[-1].new == int(limit)
    assert all(a.new == b.old for a, b in itertools.pairwise(changes))


async def test_embeddings_are_calls_too(make_config: ConfigFactory, rec: Recorder) -> None:
    async with LLMService(make_config(), on_event=rec) as svc:
        r = await svc.aembed(["a", "b"])
    assert rec.kinds() == ["CallStarted", "Attempt", "CallEnded"]
    start, end = rec.one(CallStarted), rec.one(CallEnded)
    assert start.operation == end.operation == "embeddings" and start.request is None
    assert end.ok and end.input_tokens == r.usage.prompt_tokens and end.response is r


# ---- listeners -----------------------------------------------------------------------------


async def test_a_raising_listener_never_breaks_a_call(
    make_config: ConfigFactory, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def broken(ev: Event) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("listener bug")

    caplog.set_level(logging.ERROR, logger="llmrelay")
    async with LLMService(make_config(), on_event=broken) as svc:
        svc.add_listener(rec)
        r1 = await svc.achat("first")
        r2 = await svc.achat("second")
        assert r1.text and r2.text
        assert svc.metrics.snapshot().total("listener_errors") == calls == 6
    assert len(rec.of(CallEnded)) == 2  # the next listener still gets every event
    errors = [r for r in caplog.records if "listener" in r.getMessage()]
    assert len(errors) == 1 and "RuntimeError" in errors[0].getMessage()


async def test_add_and_remove_listeners(make_config: ConfigFactory, rec: Recorder) -> None:
    async with LLMService(make_config()) as svc:
        view = svc.with_options(model="claude/claude-haiku-4-5")
        remove = view.add_listener(rec)  # a view shares the engine's listeners
        await svc.achat("seen")
        assert len(rec.of(CallEnded)) == 1
        assert remove() is True and remove() is False
        await svc.achat("unseen")
        assert len(rec.of(CallEnded)) == 1
        svc.add_listener(rec)
        assert svc.remove_listener(rec) is True and svc.remove_listener(rec) is False


async def test_no_listener_builds_no_trace(make_config: ConfigFactory, rec: Recorder) -> None:
    logging.getLogger("llmrelay").setLevel(logging.WARNING)
    try:
        async with LLMService(make_config()) as svc:
            p = svc._engine.prepare("x", None, 2, None, {}, stream=False)
            assert p.trace is None
            svc.add_listener(rec)
            p = svc._engine.prepare("x", None, 2, None, {}, stream=False)
            assert p.trace is not None
    finally:
        logging.getLogger("llmrelay").setLevel(logging.NOTSET)


def test_bad_listeners_are_refused(make_config: ConfigFactory) -> None:
    async def coro(ev: Event) -> None:
        return None

    with pytest.raises(InvalidRequestError) as info:
        LLMService(make_config(), on_event=42)  # type: ignore[arg-type]
    assert info.value.field == "on_event"
    with pytest.raises(InvalidRequestError, match="synchronously") as info:
        LLMService(make_config(), on_event=coro)
    assert info.value.field == "on_event"
    with LLMService(make_config()) as svc, pytest.raises(InvalidRequestError) as info:
        svc.add_listener("not callable")  # type: ignore[arg-type]
    assert info.value.field == "listener"


# ---- log lines -----------------------------------------------------------------------------


async def test_one_info_line_per_call_without_key_or_prompt(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llmrelay")
    async with LLMService(make_config()) as svc:
        await svc.achat("a secret prompt", temperature=0)
        await svc.achat("a secret prompt", temperature=0)
    lines = [r for r in caplog.records if r.getMessage().startswith("llmrelay call")]
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in lines)
    msg = lines[0].getMessage()
    assert "op=chat" in msg and "model=openai/gpt-4o-mini" in msg and "status=ok" in msg
    assert "deployment=openai" in msg and "attempts=1" in msg and "tokens_in=" in msg
    assert "cache=memory" in lines[1].getMessage()
    fields = lines[0].llmrelay  # type: ignore[attr-defined]
    assert fields["event"] == "call_ended" and fields["ok"] is True
    text = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "secret prompt" not in text and "sk-test-openai-key" not in text
    assert not [r for r in caplog.records if r.levelno < logging.INFO]


async def test_debug_lines_and_opt_in_content(
    make_config: ConfigFactory,
    fakes: dict[str, FakeProvider],
    recording_sleep: RecordingSleep,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="llmrelay")
    fakes["openai"].inject("rate_limit", times=1, retry_after=0.5)
    cfg = make_config(telemetry=TelemetryConfig(log_content=True))
    async with LLMService(cfg, sleep=recording_sleep) as svc:
        r = await svc.achat("show this prompt")
    msgs = [rec.getMessage() for rec in caplog.records if rec.name == "llmrelay"]
    assert any(m.startswith("llmrelay start") and "show this prompt" in m for m in msgs)
    attempts = [m for m in msgs if m.startswith("llmrelay attempt")]
    assert len(attempts) == 2 and "error_type=RateLimitError" in attempts[0]
    assert any(m.startswith("llmrelay retry") and "wait_s=" in m for m in msgs)
    (call,) = [m for m in msgs if m.startswith("llmrelay call")]
    assert "retries=1" in call and repr(r.text) in call
    assert "sk-test-openai-key" not in caplog.text


def test_events_have_distinct_tags() -> None:
    classes = [
        Attempt,
        BreakerTransition,
        CacheHit,
        CacheStored,
        CallEnded,
        CallStarted,
        ConcurrencyLimitChanged,
        DedupJoined,
        Fallback,
        Retry,
        Throttled,
    ]
    tags = [c.__struct_config__.tag for c in classes]
    assert len(set(tags)) == len(tags)
    import llmrelay.events as events_mod

    assert sorted(events_mod.__all__) == list(events_mod.__all__)
    assert {c.__name__ for c in classes} | {"Event", "Listener"} == set(events_mod.__all__)


def test_echo_provider_events() -> None:
    rec = Recorder()
    cfg_providers = [ProviderConfig(name="echo", kind="echo")]
    from llmrelay import LLMServiceConfig

    with LLMService(
        LLMServiceConfig(providers=cfg_providers, default_model="echo/echo"), on_event=rec
    ) as svc:
        svc.chat("hi")
    assert rec.kinds() == ["CallStarted", "Attempt", "CallEnded"]
    assert rec.one(CallEnded).provider == "echo"


async def test_queued_for_a_slot_is_a_throttle(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], rec: Recorder
) -> None:
    fakes["openai"].inject("slow", times=1, delay_s=0.2)
    cfg = make_config(provider_kw={"openai": {"max_concurrency": 1}})
    async with LLMService(cfg, on_event=rec) as svc:
        await asyncio.gather(svc.achat("first"), svc.achat("second"))
    (th,) = rec.of(Throttled)
    assert th.reason == "queued" and th.wait_s == 0.0
    second = rec.of(CallStarted)[1].call_id
    assert th.call_id == second
    ends = {e.call_id: e for e in rec.of(CallEnded)}
    assert ends[second].queue_wait_s > 0 and ends[second].ok


async def test_middleware_answers_and_changes(make_config: ConfigFactory, rec: Recorder) -> None:
    from llmrelay import ChatRequest, ChatResponse, Message, Usage

    canned = ChatResponse(
        id="canned-1",
        model="canned-model",
        provider="mw",
        text="from the middleware",
        message=Message(role="assistant", content="from the middleware"),
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5),
    )

    async def answer(req: ChatRequest, call_next: Any) -> ChatResponse:
        if req.messages[-1].content == "canned":
            return canned
        r: ChatResponse = await call_next(req)
        return r

    async with LLMService(make_config(), middleware=[answer], on_event=rec) as svc:
        assert (await svc.achat("canned")) is canned
        streamed = [c async for c in svc.astream("canned")]
        _ = [c async for c in svc.astream("through to the provider")]
    assert "".join(c.text or "" for c in streamed) == "from the middleware"
    plain, stream_mw, stream_real = rec.of(CallEnded)
    assert plain.ok and plain.attempts == 0 and plain.response is canned
    assert (plain.response_model, plain.input_tokens, plain.output_tokens) == ("canned-model", 2, 3)
    assert stream_mw.stream and stream_mw.ok and stream_mw.attempts == 0
    assert (stream_mw.input_tokens, stream_mw.output_tokens) == (2, 3)
    assert stream_mw.response_model == "canned-model"
    assert stream_real.ok and stream_real.attempts == 1 and stream_real.response is not None
    assert len(rec.of(Attempt)) == 1


def test_sync_stream_and_a_listener_added_later(make_config: ConfigFactory, rec: Recorder) -> None:
    with LLMService(make_config()) as svc:
        _ = list(svc.stream("unseen"))
        svc.add_listener(rec)
        chunks = list(svc.stream("seen"))
    assert rec.kinds() == ["CallStarted", "Attempt", "CallEnded"]
    end = rec.one(CallEnded)
    assert end.stream and end.ok and end.response.text == "".join(c.text or "" for c in chunks)


def test_default_service_proxy_listeners() -> None:
    from llmrelay import DefaultServiceProxy, LLMServiceConfig

    proxy = DefaultServiceProxy()
    proxy.configure(
        LLMServiceConfig(providers=[ProviderConfig(name="e", kind="echo")], default_model="e/echo")
    )
    rec = Recorder()
    try:
        remove = proxy.add_listener(rec)
        proxy.chat("via the proxy")
        assert rec.kinds() == ["CallStarted", "Attempt", "CallEnded"]
        assert remove() and not proxy.remove_listener(rec)
    finally:
        proxy.close()


async def test_a_stream_cut_after_its_first_chunk_is_a_failed_attempt(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], rec: Recorder
) -> None:
    """The attempt of a stream ends with the stream: one that opened and then broke off
    is reported as failed (with its error), once, and counted as a failure."""
    fakes["openai"].inject("cut_stream", times=1, after=2)
    cfg = make_config(orchestrator=OrchestratorConfig(max_retries=0))
    async with LLMService(cfg, on_event=rec) as svc:
        got: list[str] = []
        with pytest.raises(LLMRelayError) as e:
            async for c in svc.astream("one two three four five six seven"):
                got.append(c.text or "")
        assert "".join(got)  # the head reached the caller before the cut
        (attempt,) = rec.of(Attempt)
        assert not attempt.ok and attempt.sent
        assert attempt.error_type == type(e.value).__name__
        assert attempt.duration_s > 0
        end = rec.one(CallEnded)
        assert not end.ok and end.attempts == 1
        snap = svc.metrics.snapshot()
        failures = {k: v for s in snap.series for k, v in s.counters.items() if "failures." in k}
        assert sum(failures.values()) == 1, failures
        assert snap.total("successes") == 0
        rec.events.clear()
        chunks = [c async for c in svc.astream("and now a whole one")]
        assert chunks
        (attempt,) = rec.of(Attempt)
        assert attempt.ok and attempt.error_type is None
        assert rec.one(CallEnded).ok
