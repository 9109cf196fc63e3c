"""Chaos: a primary failing 40% of its calls with a mix of faults, and what callers see.

With a healthy fallback every request is answered, none past its deadline, and the
metrics account for every attempt. Without one, every request ends in a response or in
one typed ``llmrelay.errors`` exception, within its deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from llmrelay import (
    CacheConfig,
    ChatResponse,
    CircuitBreakerConfig,
    LLMService,
    ModelSelectionStrategy,
    OrchestratorConfig,
    RequestTimeouts,
)
from llmrelay.errors import LLMRelayError, ProviderUnavailableError
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory
from soak_helpers import count, report

TIMEOUT_S = 2.0
SLACK_S = 0.75  # scheduling noise on a shared 2-core machine, not a retry
CONCURRENCY = 32
FAULT_RATIO = 0.4
# (fault, args): the mix injected on the primary
MIX: list[tuple[str, dict[str, Any]]] = [
    ("rate_limit", {"retry_after": 0.01}),
    ("server_error", {}),
    ("unavailable", {}),
    ("overloaded", {}),
    ("reset", {}),
    ("hang", {}),
    ("cut_stream", {"after": 0}),
    ("cut_stream", {"after": 1}),
    ("cut_stream", {"after": 2}),
    ("malformed_json", {}),
]


def inject_mix(fake: FakeProvider, ratio: float, seed: int) -> None:
    """Rules whose combined firing rate is ``ratio``, split evenly over MIX.

    Rules are asked in order and the first that fires wins, so rule i fires with
    probability share / (1 - i * share) among the requests the earlier rules let pass.
    """
    share = ratio / len(MIX)
    for i, (kind, args) in enumerate(MIX):
        fake.inject(kind, ratio=min(1.0, share / (1 - i * share)), seed=seed + i, **args)


def chaos_config(make_config: ConfigFactory, *, fallback: bool) -> Any:
    fallbacks = {"openai/gpt-4o-mini": ["claude/claude-haiku-4-5"]} if fallback else {}
    return make_config(
        orchestrator=OrchestratorConfig(backoff_initial_s=0.001, backoff_max_s=0.01, max_retries=2),
        # a hang is bounded by the read timeout, then retried or failed over
        timeouts=RequestTimeouts(read_s=0.25, stream_idle_s=0.25, total_s=TIMEOUT_S),
        circuit_breaker=CircuitBreakerConfig(open_duration_s=0.05, minimum_calls=20),
        selection=ModelSelectionStrategy(fallbacks=fallbacks),
        cache=CacheConfig(enabled=False),
        # the healthy fallback has timeouts of its own, not the primary's tight ones
        provider_kw={
            "claude": {
                "timeouts": RequestTimeouts(read_s=5.0, stream_idle_s=5.0, total_s=TIMEOUT_S)
            }
        },
    )


class CutAfterContent(Exception):
    """A stream that failed, typed, after some of its text had reached the caller."""

    def __init__(self, err: LLMRelayError, text: str) -> None:
        super().__init__(repr(err))
        self.err = err
        self.text = text


async def _one(svc: LLMService, i: int) -> tuple[str, float, Any]:
    """Run request ``i`` (even: plain, odd: streamed); (kind, seconds, outcome)."""
    loop = asyncio.get_running_loop()
    prompt = f"chaos request {i}"
    t0 = loop.time()
    outcome: Any
    if i % 2 == 0:
        try:
            r = await svc.achat(prompt, timeout=TIMEOUT_S)
            assert isinstance(r, ChatResponse) and prompt in r.text, r
            outcome = r
        except LLMRelayError as e:
            outcome = e
        return "plain", loop.time() - t0, outcome
    chunks = []
    try:
        async for c in svc.astream(prompt, timeout=TIMEOUT_S):
            chunks.append(c)
        text = "".join(c.text for c in chunks)
        assert prompt in text, text
        assert chunks[-1].usage is not None
        outcome = text
    except LLMRelayError as e:
        text = "".join(c.text for c in chunks)
        # once text has reached the caller a stream cannot be replayed elsewhere
        outcome = CutAfterContent(e, text) if text else e
    return "stream", loop.time() - t0, outcome


async def _run_all(svc: LLMService, n: int) -> list[tuple[str, float, Any]]:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def bounded(i: int) -> tuple[str, float, Any]:
        async with sem:
            return await _one(svc, i)

    return await asyncio.gather(*(bounded(i) for i in range(n)))


def _check_accounting(svc: LLMService, fakes: dict[str, FakeProvider]) -> dict[str, int]:
    """Per series: requests == successes + failures; every attempt sent is counted."""
    snap = svc.metrics.snapshot()
    failures: Counter[str] = Counter()
    for s in snap.series:
        failed = sum(v for k, v in s.counters.items() if k.startswith("failures."))
        assert s.counter("requests") == s.counter("successes") + failed, s
        failures.update({k: v for k, v in s.counters.items() if k.startswith("failures.")})
    for dep, fake in (("openai", fakes["openai"]), ("claude", fakes["anthropic"])):
        series = snap.for_deployment(dep)
        counted = sum(s.counter("requests") for s in series)
        # attempts refused before sending (open circuit) are counted but never reach the fake
        refused = sum(s.counter("failures.CircuitOpenError") for s in series)
        # an attempt the caller's deadline (or the caller) cut may have been cut before its
        # bytes reached the fake: counted, it may or may not have arrived
        cut = sum(
            s.counter("failures.DeadlineExceeded") + s.counter("failures.Cancelled") for s in series
        )
        received = fake.request_count
        assert counted - refused - cut <= received <= counted - refused, (
            dep,
            counted,
            refused,
            cut,
            received,
        )
    return dict(failures)


async def test_chaos_with_fallback_answers_everything(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    n = count(2_000, 10_000)
    inject_mix(fakes["openai"], FAULT_RATIO, seed=7)
    started = time.perf_counter()
    async with LLMService(chaos_config(make_config, fallback=True)) as svc:
        results = await _run_all(svc, n)
        errors = [(kind, o) for kind, _, o in results if isinstance(o, LLMRelayError)]
        assert not errors, errors[:5]
        cut = [o for _, _, o in results if isinstance(o, CutAfterContent)]
        # a mid-stream cut after text reached the caller is the one failure it may see
        assert all(isinstance(o.err, ProviderUnavailableError) for o in cut), cut[:3]
        assert len(cut) < n * FAULT_RATIO / len(MIX)
        slowest = max(d for _, d, _ in results)
        assert slowest <= TIMEOUT_S + SLACK_S
        failures = _check_accounting(svc, fakes)
        snap = svc.metrics.snapshot()
        assert snap.total("successes") == n - len(cut)
        sched = svc._engine.orchestrator.runtimes["openai"].scheduler
        assert sched.in_flight == 0 and sched.queued == 0
    report(
        "chaos_fallback",
        {
            "requests": n,
            "answered": n - len(cut),
            "stream_cut_after_text": len(cut),
            "primary_attempts": fakes["openai"].request_count,
            "fallback_attempts": fakes["anthropic"].request_count,
            "failures": failures,
            "retries": snap.total("retries"),
            "fallbacks": snap.total("fallbacks"),
            "slowest_s": round(slowest, 3),
            "wall_s": round(time.perf_counter() - started, 2),
        },
    )


async def test_chaos_without_fallback_is_typed_and_bounded(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    n = count(600, 3_000)
    inject_mix(fakes["openai"], FAULT_RATIO, seed=11)
    async with LLMService(chaos_config(make_config, fallback=False)) as svc:
        results = await _run_all(svc, n)
        _check_accounting(svc, fakes)
    outcomes = Counter(
        type(o).__name__ if isinstance(o, BaseException) else "answered" for _, _, o in results
    )
    assert all(
        isinstance(o, LLMRelayError | CutAfterContent | str | ChatResponse) for _, _, o in results
    )
    assert max(d for _, d, _ in results) <= TIMEOUT_S + SLACK_S
    # no fallback: while the breaker is open the backlog fails fast (CircuitOpenError)
    assert outcomes["answered"] > 0
    report("chaos_no_fallback", {"requests": n, "outcomes": dict(outcomes)})


@pytest.mark.parametrize("fault", sorted({k for k, _ in MIX}))
async def test_always_failing_primary_ends_typed_within_deadline(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider], fault: str
) -> None:
    args = dict(next(a for k, a in MIX if k == fault))
    fakes["openai"].inject(fault, **args)
    n = 20
    async with LLMService(chaos_config(make_config, fallback=False)) as svc:
        results = await _run_all(svc, n)
    for kind, took, outcome in results:
        assert took <= TIMEOUT_S + SLACK_S, (kind, took)
        assert isinstance(outcome, LLMRelayError | CutAfterContent), (kind, outcome)


async def test_attempt_cut_by_the_deadline_is_counted(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    """An attempt the total deadline cuts short was sent: the metrics must count it."""
    fakes["openai"].inject("hang")
    async with LLMService(make_config(cache=CacheConfig(enabled=False))) as svc:
        for stream in (False, True):
            with pytest.raises(LLMRelayError):
                if stream:
                    _ = [c async for c in svc.astream("cut by deadline", timeout=0.2)]
                else:
                    await svc.achat("cut by deadline", timeout=0.2)
        _check_accounting(svc, fakes)
        snap = svc.metrics.snapshot()
        assert snap.total("failures.DeadlineExceeded") == 2
        assert snap.total("failures.ProviderTimeoutError") == 0
        # the caller's deadline is not the deployment's fault: breaker and limit untouched
        rt = svc._engine.orchestrator.runtimes["openai"]
        assert rt.breaker.failure_rate == 0.0 and rt.breaker.state == "closed"
        assert rt.scheduler.limit == 64
