"""abatch / batch: back-pressure instead of QueueFullError, progress, input order."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from llmrelay import ChatResponse, LLMService, LLMServiceConfig, OrchestratorConfig, ProviderConfig
from llmrelay._batch import BatchRunner, batch_limit
from llmrelay._types import Message, Usage
from llmrelay.errors import InvalidRequestError, LLMRelayError, QueueFullError
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory, RecordingSleep


def _resp(text: str, cached: bool = False) -> ChatResponse:
    return ChatResponse(
        id="r",
        model="m",
        provider="p",
        text=text,
        message=Message(role="assistant", content=text),
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(),
        cached=cached,
    )


def _cfg(**orch: Any) -> LLMServiceConfig:
    return LLMServiceConfig(
        providers=[
            ProviderConfig(name="a", kind="echo"),
            ProviderConfig(name="b", kind="echo", max_concurrency=3),
        ],
        orchestrator=OrchestratorConfig(**orch),
    )


def test_batch_limit_is_what_the_smallest_deployment_always_holds() -> None:
    # adaptive: only min_concurrency slots are guaranteed; half the queue by default
    assert batch_limit(_cfg(max_queue_size=100), None, 400) == 1 + 50
    assert batch_limit(_cfg(max_queue_size=100, min_concurrency=2), None, 400) == 2 + 50
    # fixed limits: deployment b has 3 slots, fewer than a's 64
    assert batch_limit(_cfg(max_queue_size=100, adaptive_concurrency=False), None, 400) == 53
    # an explicit concurrency is honoured up to the whole queue, never beyond
    assert batch_limit(_cfg(max_queue_size=100), 20, 400) == 20
    assert batch_limit(_cfg(max_queue_size=100), 1000, 400) == 101
    # never more workers than items, never fewer than one
    assert batch_limit(_cfg(max_queue_size=100), None, 7) == 7
    assert batch_limit(_cfg(max_queue_size=0), None, 0) == 1


async def test_explicit_concurrency_beyond_the_queue_is_capped(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    cfg = make_config(orchestrator=OrchestratorConfig(max_queue_size=10, max_concurrency=2))
    async with LLMService(cfg) as svc:
        out = await svc.abatch([f"q{i}" for i in range(200)], concurrency=1000)
        assert all(isinstance(r, ChatResponse) for r in out)
        assert [r.text for r in out if isinstance(r, ChatResponse)] == [
            f"echo: q{i}" for i in range(200)
        ]


def _runner(call: Any, limit: int, sleep: RecordingSleep, **kw: Any) -> BatchRunner[Any]:
    return BatchRunner(
        call,
        limit=limit,
        on_progress=kw.get("on_progress"),
        backoff=lambda n, e: 0.5 * n,
        sleep=sleep,
        max_retries=kw.get("max_retries", 3),
    )


async def test_a_full_queue_from_other_traffic_waits_for_the_batch_own_completions() -> None:
    """An item refused while others of the batch run retries when one of them ends."""
    release = asyncio.Event()
    calls: list[str] = []
    refused = {"x"}

    async def call(item: str) -> ChatResponse:
        calls.append(item)
        if item in refused:
            refused.discard(item)
            raise QueueFullError("queue full")
        if item == "slow":
            await release.wait()
        return _resp(item)

    sleep = RecordingSleep()
    runner = _runner(call, 2, sleep)
    task = asyncio.create_task(runner.run(["slow", "x"]))
    for _ in range(10):
        await asyncio.sleep(0)
    assert calls == ["slow", "x"]  # x refused, parked until slow ends
    release.set()
    out = await task
    assert [r.text for r in out if isinstance(r, ChatResponse)] == ["slow", "x"]
    assert calls == ["slow", "x", "x"]
    assert sleep.delays == []  # no timed backoff while the batch itself frees room


async def test_a_lone_refused_item_backs_off_then_reports_queue_full() -> None:
    async def call(item: str) -> ChatResponse:
        raise QueueFullError("queue full")

    sleep = RecordingSleep()
    out = await _runner(call, 4, sleep, max_retries=2).run(["only"])
    assert isinstance(out[0], QueueFullError)
    assert sleep.delays == [0.5, 1.0]


async def test_every_item_refused_does_not_deadlock() -> None:
    """All items parked would wait forever: the last one backs off instead."""
    attempts: dict[str, int] = {}

    async def call(item: str) -> ChatResponse:
        attempts[item] = attempts.get(item, 0) + 1
        if attempts[item] < 3:
            raise QueueFullError("queue full")
        return _resp(item)

    sleep = RecordingSleep()
    out = await asyncio.wait_for(_runner(call, 3, sleep).run(["a", "b", "c"]), 5)
    assert [r.text for r in out if isinstance(r, ChatResponse)] == ["a", "b", "c"]


async def test_progress_counts_done_failed_cached(make_config: ConfigFactory) -> None:
    seen: list[tuple[int, int, int]] = []
    async with LLMService(make_config()) as svc:
        await svc.achat("warm", temperature=0)
        out = await svc.abatch(
            [
                {"messages": "warm", "temperature": 0},
                "fresh",
                {"messages": "bad", "model": "nobody/x"},
            ],
            concurrency=1,
            on_progress=lambda d, f, c: seen.append((d, f, c)),
        )
    assert isinstance(out[0], ChatResponse) and out[0].cached
    assert isinstance(out[2], InvalidRequestError)
    assert seen == [(1, 0, 1), (2, 0, 1), (3, 1, 1)]


async def test_a_raising_progress_callback_does_not_sink_the_batch(
    make_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def broken(done: int, failed: int, cached: int) -> None:
        calls.append(done)
        raise RuntimeError("progress bar closed")

    async with LLMService(make_config()) as svc:
        with caplog.at_level(logging.WARNING, logger="llmrelay"):
            out = await svc.abatch(["a", "b", "c"], concurrency=1, on_progress=broken)
    assert all(isinstance(r, ChatResponse) for r in out)
    assert calls == [1]  # called once, then no more
    warnings = [r for r in caplog.records if "on_progress" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is not None


def test_sync_batch_takes_progress_and_keeps_order(make_config: ConfigFactory) -> None:
    seen: list[int] = []
    with LLMService(make_config()) as svc:
        out = svc.batch([f"s{i}" for i in range(20)], on_progress=lambda d, f, c: seen.append(d))
        assert [r.text for r in out if isinstance(r, ChatResponse)] == [
            f"echo: s{i}" for i in range(20)
        ]
        assert seen == list(range(1, 21))
        with pytest.raises(InvalidRequestError) as ei:
            svc.batch(["x"], on_progress="yes")  # type: ignore[arg-type]
        assert ei.value.field == "on_progress"


async def test_a_bug_in_an_item_stays_in_its_slot() -> None:
    async def call(item: str) -> ChatResponse:
        if item == "boom":
            raise KeyError("oops")
        return _resp(item)

    out = await _runner(call, 2, RecordingSleep()).run(["a", "boom", "c"])
    assert isinstance(out[1], LLMRelayError) and isinstance(out[1].__cause__, KeyError)
    assert isinstance(out[0], ChatResponse) and isinstance(out[2], ChatResponse)
