"""LLMService end to end against the fake providers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from llmrelay import (
    CacheConfig,
    CacheControl,
    ChatRequest,
    ChatResponse,
    CircuitBreakerConfig,
    LLMService,
    ModelSelectionStrategy,
    OrchestratorConfig,
    Priority,
    _core,
)
from llmrelay.errors import (
    AllProvidersFailedError,
    CircuitOpenError,
    InvalidRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QueueFullError,
    RateLimitError,
)
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory, RecordingSleep


async def wait_for(cond: Any, limit_s: float = 5.0) -> None:
    """Poll a condition (bounded): for waiting on a real server, not for time logic."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_chat_each_protocol(make_config: ConfigFactory) -> None:
    async with LLMService(make_config()) as svc:
        for model in ("openai/gpt-4o-mini", "claude/claude-haiku-4-5", "local/llama3.2"):
            r = await svc.achat("Hello there", model)
            assert isinstance(r, ChatResponse)
            assert "Hello there" in r.text
            assert r.usage.total_tokens > 0
            assert r.provider == model.split("/")[0]
            assert not r.cached and r.attempts == 1


async def test_stream_each_protocol(make_config: ConfigFactory) -> None:
    async with LLMService(make_config()) as svc:
        for model in ("openai/gpt-4o-mini", "claude/claude-haiku-4-5", "local/llama3.2"):
            chunks = [c async for c in svc.astream("Stream me", model)]
            text = "".join(c.text for c in chunks)
            assert "Stream me" in text
            assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


async def test_bare_model_name_resolves(make_config: ConfigFactory) -> None:
    async with LLMService(make_config()) as svc:
        r = await svc.achat("hi", "claude-haiku-4-5")
        assert r.provider == "claude"


async def test_cache_hit_and_controls(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    async with LLMService(make_config()) as svc:
        a = await svc.achat("same", temperature=0)
        b = await svc.achat("same", temperature=0)
        assert b.cached and b.text == a.text and fake.request_count == 1
        await svc.achat("same", temperature=0, cache=False)
        assert fake.request_count == 2
        r = await svc.achat("same", temperature=0, cache=CacheControl(refresh=True))
        assert not r.cached and fake.request_count == 3
        r = await svc.achat("same", temperature=0, cache=CacheControl(namespace="other"))
        assert not r.cached and fake.request_count == 4
        # not deterministic: not cached by default
        await svc.achat("warm", temperature=0.7)
        await svc.achat("warm", temperature=0.7)
        assert fake.request_count == 6
        snap = svc.metrics.snapshot()
        assert snap.total("cache_hits.memory") == 1


async def test_disk_cache_survives_restart(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    cfg = make_config(cache=CacheConfig(disk_path=str(tmp_path / "cache")))
    async with LLMService(cfg) as svc:
        first = await svc.achat("persist me", seed=1)
    async with LLMService(cfg) as svc:
        again = await svc.achat("persist me", seed=1)
        assert again.cached and again.text == first.text
        assert svc.metrics.snapshot().total("cache_hits.disk") == 1
    assert fakes["openai"].request_count == 1


async def test_cache_entries_scoped_by_credential(
    fakes: dict[str, FakeProvider], make_config: ConfigFactory, tmp_path: Path
) -> None:
    disk = CacheConfig(disk_path=str(tmp_path / "shared"))
    async with LLMService(make_config(cache=disk)) as svc:
        await svc.achat("tenant question", temperature=0)
    other = make_config(cache=disk, provider_kw={"openai": {"api_key": "sk-other-tenant"}})
    async with LLMService(other) as svc:
        r = await svc.achat("tenant question", temperature=0)
        assert not r.cached
    assert fakes["openai"].request_count == 2
    for f in (tmp_path / "shared").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert b"sk-test-openai-key" not in data and b"sk-other-tenant" not in data


async def test_dedup_shares_one_provider_call(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.latency_s = 0.05
    async with LLMService(make_config()) as svc:
        rs = await asyncio.gather(*(svc.achat("dup", temperature=0) for _ in range(10)))
        assert fake.request_count == 1
        assert len({r.text for r in rs}) == 1
        assert svc.metrics.snapshot().total("dedup_joins") == 9
        assert svc._engine.dedup.in_flight() == 0 and svc._engine.dedup.waiting() == 0


async def test_dedup_leader_failure_fails_followers_typed(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.latency_s = 0.05
    fake.inject("auth", times=1)
    async with LLMService(make_config()) as svc:
        rs = await asyncio.gather(
            *(svc.achat("dup-fail", temperature=0) for _ in range(5)), return_exceptions=True
        )
        assert all(type(r).__name__ == "AuthenticationError" for r in rs)
        assert fake.request_count == 1
        assert svc._engine.dedup.in_flight() == 0 and svc._engine.dedup.waiting() == 0


async def test_cancelled_dedup_leader_promotes_a_follower(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.inject("hang", times=1)
    async with LLMService(make_config()) as svc:
        leader = asyncio.create_task(svc.achat("promote", temperature=0))
        await wait_for(lambda: fake.request_count == 1)
        follower = asyncio.create_task(svc.achat("promote", temperature=0))
        await asyncio.sleep(0)
        leader.cancel()
        r = await asyncio.wait_for(follower, 5)
        assert "promote" in r.text and fake.request_count == 2
        with pytest.raises(asyncio.CancelledError):
            await leader


async def test_retry_after_is_honoured(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], recording_sleep: RecordingSleep
) -> None:
    fake = fakes["openai"]
    fake.inject("rate_limit", times=2, retry_after=2.0)
    async with LLMService(make_config(), sleep=recording_sleep) as svc:
        r = await svc.achat("retry me")
        assert r.attempts == 3 and fake.request_count == 3
        assert len(recording_sleep.delays) == 2
        assert all(d >= 2.0 for d in recording_sleep.delays)
        assert svc.metrics.snapshot().total("retries") == 2


async def test_retries_exhausted_raise_typed(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], recording_sleep: RecordingSleep
) -> None:
    fakes["openai"].inject("rate_limit", retry_after=0.1)
    cfg = make_config(orchestrator=OrchestratorConfig(max_retries=2))
    async with LLMService(cfg, sleep=recording_sleep) as svc:
        with pytest.raises(RateLimitError) as info:
            await svc.achat("never")
        assert info.value.retry_after == pytest.approx(0.1)
        assert fakes["openai"].request_count == 3


async def test_breaker_fails_fast_then_recovers_through_half_open(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], recording_sleep: RecordingSleep
) -> None:
    fake = fakes["openai"]
    clock = _core.ManualClock()
    cfg = make_config(
        orchestrator=OrchestratorConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(minimum_calls=2, window_size=2, open_duration_s=10),
    )
    fake.inject("unavailable")
    async with LLMService(cfg, clock=clock, sleep=recording_sleep) as svc:
        for _ in range(2):
            with pytest.raises(ProviderUnavailableError):
                await svc.achat("x")
        with pytest.raises(CircuitOpenError) as info:
            await svc.achat("x")
        assert info.value.retry_after == pytest.approx(10, abs=0.01)
        assert fake.request_count == 2  # failed fast: nothing sent
        fake.clear_faults()
        clock.advance(10.5)
        r = await svc.achat("x")
        assert r.text and fake.request_count == 3
        br = svc._engine.orchestrator.runtimes["openai"].breaker
        assert br.state == "closed"
        t = br.transitions()
        assert t["closed->open"] == 1 and t["open->half_open"] == 1 and t["half_open->closed"] == 1


async def test_fallback_across_providers(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], recording_sleep: RecordingSleep
) -> None:
    fakes["openai"].inject("unavailable")
    cfg = make_config(
        orchestrator=OrchestratorConfig(max_retries=1),
        selection=ModelSelectionStrategy(
            fallbacks={"openai/gpt-4o-mini": ["claude/claude-haiku-4-5"]}
        ),
    )
    async with LLMService(cfg, sleep=recording_sleep) as svc:
        r = await svc.achat("fall back")
        assert r.provider == "claude" and r.attempts == 3
        assert fakes["openai"].request_count == 2 and fakes["anthropic"].request_count == 1
        snap = svc.metrics.snapshot()
        assert snap.total("fallbacks") == 1
        for dep in ("openai", "claude"):
            for s in snap.for_deployment(dep):
                failures = sum(v for k, v in s.counters.items() if k.startswith("failures."))
                assert s.counter("requests") == s.counter("successes") + failures


async def test_all_providers_failed_lists_attempts(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], recording_sleep: RecordingSleep
) -> None:
    fakes["openai"].inject("unavailable")
    fakes["anthropic"].inject("overloaded")
    cfg = make_config(
        orchestrator=OrchestratorConfig(max_retries=0),
        selection=ModelSelectionStrategy(
            fallbacks={"openai/gpt-4o-mini": ["claude/claude-haiku-4-5"]}
        ),
    )
    async with LLMService(cfg, sleep=recording_sleep) as svc:
        with pytest.raises(AllProvidersFailedError) as info:
            await svc.achat("doomed")
        assert [(a.provider, a.model) for a in info.value.attempts] == [
            ("openai", "gpt-4o-mini"),
            ("claude", "claude-haiku-4-5"),
        ]


async def test_priority_order_under_concurrency_one(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.latency_s = 0.1
    cfg = make_config(
        provider_kw={"openai": {"max_concurrency": 1}},
        orchestrator=OrchestratorConfig(adaptive_concurrency=False),
    )
    async with LLMService(cfg) as svc:
        first = asyncio.create_task(svc.achat("p-first"))
        await wait_for(lambda: fake.request_count == 1)
        tasks = [
            asyncio.create_task(svc.achat(f"p-{prio}", priority=prio)) for prio in (4, 3, 9, 1, 0)
        ]
        await asyncio.gather(first, *tasks)
        order = [_last_user(r.json) for r in fake.requests]
        assert order == ["p-first", "p-0", "p-1", "p-3", "p-4", "p-9"]


def _last_user(body: Any) -> str:
    return str(body["messages"][-1]["content"])


async def test_queue_full_is_immediate(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.latency_s = 0.1
    cfg = make_config(
        provider_kw={"openai": {"max_concurrency": 1}},
        orchestrator=OrchestratorConfig(max_queue_size=1, adaptive_concurrency=False),
    )
    async with LLMService(cfg) as svc:
        running = asyncio.create_task(svc.achat("q1"))
        await wait_for(lambda: fake.request_count == 1)
        queued = asyncio.create_task(svc.achat("q2"))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await svc.achat("q3")
        await asyncio.gather(running, queued)


async def test_cancelled_caller_releases_its_slot(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.inject("hang", times=1)
    cfg = make_config(
        provider_kw={"openai": {"max_concurrency": 1}},
        orchestrator=OrchestratorConfig(adaptive_concurrency=False),
    )
    async with LLMService(cfg) as svc:
        stuck = asyncio.create_task(svc.achat("hang"))
        await wait_for(lambda: fake.request_count == 1)
        waiting = asyncio.create_task(svc.achat("after"))
        await asyncio.sleep(0)
        sched = svc._engine.orchestrator.runtimes["openai"].scheduler
        assert sched.in_flight == 1 and sched.queued == 1
        stuck.cancel()
        r = await asyncio.wait_for(waiting, 5)
        assert "after" in r.text
        assert sched.in_flight == 0 and sched.queued == 0
        breaker = svc._engine.orchestrator.runtimes["openai"].breaker
        assert breaker.state == "closed"


async def test_hung_provider_bounded_by_total_timeout(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fakes["openai"].inject("hang")
    async with LLMService(make_config()) as svc:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises((ProviderTimeoutError, AllProvidersFailedError)):
            await svc.achat("hang", timeout=0.2)
        assert loop.time() - t0 < 2.0
        sched = svc._engine.orchestrator.runtimes["openai"].scheduler
        assert sched.in_flight == 0


async def test_client_side_rate_limit_reserves_and_reconciles(
    make_config: ConfigFactory, recording_sleep: RecordingSleep
) -> None:
    from llmrelay import RateLimitConfig

    cfg = make_config(
        provider_kw={"openai": {"rate_limit": RateLimitConfig(requests_per_minute=60, burst=1)}}
    )
    async with LLMService(cfg, sleep=recording_sleep, clock=_core.ManualClock()) as svc:
        for i in range(3):
            await svc.achat(f"rl {i}")
        # burst 1 at 1/s: the 2nd and 3rd calls waited 1 s and 2 s for their slot
        assert recording_sleep.delays == pytest.approx([1.0, 2.0], abs=0.01)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"messages": 123}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": "hi", "priority": 10}, "priority"),
        ({"messages": "hi", "model": "nobody/none"}, "model"),
        ({"messages": "hi", "temperature": 5}, "params.temperature"),
        ({"messages": "hi", "timeout": -1}, "timeout"),
        ({"messages": "hi", "cache": "yes"}, "cache"),
        ({"messages": "hi", "bogus_param": 1}, "params.bogus_param"),
    ],
)
async def test_bad_input_is_typed(
    make_config: ConfigFactory, kwargs: dict[str, Any], field: str
) -> None:
    async with LLMService(make_config()) as svc:
        with pytest.raises(InvalidRequestError) as info:
            await svc.achat(**kwargs)
        assert info.value.field == field


async def test_closed_service_refuses(make_config: ConfigFactory) -> None:
    svc = LLMService(make_config())
    await svc.aclose()
    with pytest.raises(Exception, match="closed"):
        await svc.achat("late")


def test_sync_twins_from_many_threads(make_config: ConfigFactory) -> None:
    results: dict[int, str] = {}
    errors: list[BaseException] = []
    with LLMService(make_config()) as svc:

        def work(i: int) -> None:
            try:
                results[i] = svc.chat(f"thread {i}", temperature=0).text
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert not errors
        expected = {i: svc.chat(f"thread {i}", temperature=0).text for i in range(32)}
        assert results == expected
        chunks = list(svc.stream("sync stream", "claude/claude-haiku-4-5"))
        assert "sync stream" in "".join(c.text for c in chunks)
        emb = svc.embed(["a", "b"], "openai/text-embedding-3-small")
        assert len(emb.embeddings) == 2
        out = svc.batch(["b1", "b2", {"messages": "b3", "model": "nobody/x"}])
        assert isinstance(out[0], ChatResponse) and isinstance(out[2], InvalidRequestError)


async def test_streamed_response_cached_and_replayed(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.script(tool_calls=[{"name": "lookup", "arguments": {"q": "tides"}}])
    async with LLMService(make_config()) as svc:
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
        first = [c async for c in svc.astream("use a tool", temperature=0, tools=tools)]
        again = [c async for c in svc.astream("use a tool", temperature=0, tools=tools)]
        assert fake.request_count == 1

        def calls(chunks: list[Any]) -> list[tuple[str | None, str]]:
            out: dict[int, list[Any]] = {}
            for c in chunks:
                for d in c.tool_calls:
                    cur = out.setdefault(d.index, [None, ""])
                    cur[0] = cur[0] or d.name
                    cur[1] += d.arguments_delta
            return [(n, a.replace(" ", "")) for n, a in out.values()]

        assert calls(first) == calls(again) == [("lookup", '{"q":"tides"}')]
        assert [c.finish_reason for c in again if c.finish_reason] == [
            c.finish_reason for c in first if c.finish_reason
        ]


async def test_embeddings(make_config: ConfigFactory) -> None:
    async with LLMService(make_config()) as svc:
        r = await svc.aembed(["one", "two", "three"], "openai/text-embedding-3-small")
        assert len(r.embeddings) == 3 and all(len(v) > 0 for v in r.embeddings)
        r2 = await svc.aembed("solo", "local/nomic-embed-text")
        assert len(r2.embeddings) == 1
        with pytest.raises(InvalidRequestError, match="inputs"):
            await svc.aembed([], "openai/text-embedding-3-small")


async def test_with_options_shares_the_engine(make_config: ConfigFactory) -> None:
    async with LLMService(make_config()) as svc:
        agent = svc.with_options(model="claude/claude-haiku-4-5", priority=Priority.HIGH)
        r = await agent.achat("as agent")
        assert r.provider == "claude"
        await agent.aclose()  # closes nothing of the parent
        r2 = await svc.achat("parent still works")
        assert r2.provider == "openai"
        assert svc.metrics is agent.metrics
        with pytest.raises(InvalidRequestError):
            svc.with_options(priority=12)


async def test_middleware_sees_before_and_after(make_config: ConfigFactory) -> None:
    seen: list[str] = []

    async def mw(req: ChatRequest, call_next: Any) -> ChatResponse:
        seen.append(f"before {req.messages[-1].content}")
        resp: ChatResponse = await call_next(req)
        seen.append(f"after {resp.provider}")
        return resp

    async with LLMService(make_config(), middleware=[mw]) as svc:
        await svc.achat("mw")
    assert seen == ["before mw", "after openai"]


async def test_metrics_snapshot_and_prometheus(make_config: ConfigFactory) -> None:
    async with LLMService(make_config()) as svc:
        await svc.achat("m1")
        await svc.achat("m2", "claude/claude-haiku-4-5")
        snap = svc.metrics.snapshot()
        assert snap.total("requests") == 2 and snap.total("successes") == 2
        assert snap.breakers["openai"]["state"] == "closed"
        assert snap.concurrency["openai"]["limit"] >= 1
        text = svc.metrics.prometheus()
        assert "gen_ai_client_operation_duration_seconds_bucket" in text
        assert "gen_ai_client_token_usage_sum" in text
        assert 'llmrelay_requests_total{provider="anthropic"' in text
        assert "sk-test" not in text
        svc.metrics.reset()
        assert svc.metrics.snapshot().total("requests") == 0


async def test_paces_from_provider_headers_before_a_429(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], recording_sleep: RecordingSleep
) -> None:
    fakes["openai"].set_rate_limit_headers(
        limit_requests=600, remaining_requests=0, reset_requests_s=5.0
    )
    async with LLMService(make_config(), sleep=recording_sleep, clock=_core.ManualClock()) as svc:
        await svc.achat("first")
        assert recording_sleep.delays == []
        await svc.achat("second")
        # nothing remains until the reset: the second call waited for it, no 429 needed
        assert len(recording_sleep.delays) == 1
        assert recording_sleep.delays[0] == pytest.approx(5.0, abs=0.2)
        assert fakes["openai"].request_count == 2


async def test_leader_and_first_follower_cancelled_together_next_follower_runs(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["openai"]
    fake.inject("hang", times=1)
    async with LLMService(make_config()) as svc:
        leader = asyncio.create_task(svc.achat("relay", temperature=0))
        await wait_for(lambda: fake.request_count == 1)
        f1 = asyncio.create_task(svc.achat("relay", temperature=0))
        f2 = asyncio.create_task(svc.achat("relay", temperature=0))
        await asyncio.sleep(0)
        leader.cancel()
        f1.cancel()
        r = await asyncio.wait_for(f2, 5)
        assert "relay" in r.text
        for t in (leader, f1):
            with pytest.raises(asyncio.CancelledError):
                await t
        dedup = svc._engine.dedup
        assert dedup.in_flight() == 0 and dedup.waiting() == 0


async def test_embed_on_a_kind_without_embeddings_is_typed() -> None:
    from llmrelay import LLMServiceConfig, ProviderConfig

    cfg = LLMServiceConfig(
        providers=[ProviderConfig(name="e", kind="echo")], default_model="e/echo"
    )
    async with LLMService(cfg) as svc:
        with pytest.raises(InvalidRequestError, match="no embeddings"):
            await svc.aembed("x")


# ---- abatch back-pressure and progress --------------------------------------------------------


async def test_abatch_never_overflows_the_queue_on_its_own(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    cfg = make_config(orchestrator=OrchestratorConfig(max_queue_size=100, max_concurrency=4))
    async with LLMService(cfg) as svc:
        prompts = [f"prompt {i}" for i in range(400)]
        out = await svc.abatch(prompts)
        errors = [r for r in out if not isinstance(r, ChatResponse)]
        assert errors == []
        assert [r.text for r in out if isinstance(r, ChatResponse)] == [
            f"echo: prompt {i}" for i in range(400)
        ]
        assert fakes["openai"].request_count == 400


async def test_cost_strategy_orders_by_the_registrys_prices(make_config: ConfigFactory) -> None:
    """A bare model listed by two deployments of different price goes to the cheaper first."""
    from llmrelay import ModelSelectionStrategy

    config = make_config(
        selection=ModelSelectionStrategy(strategy="cost"),
        provider_kw={"openai": {"models": ["gpt-4o", "gpt-4o-mini"]}},
    )
    async with LLMService(config) as svc:
        eng = svc._engine
        cands = eng.selector.candidates("openai/gpt-4o")
        facts = [eng.selector.facts(c.deployment.kind, c.model).cost_per_mtok for c in cands]
    assert facts == [12.5]  # 2.50 in + 10.00 out per million tokens: the price is known
