"""The sync API from 64 threads at once gives the same results as the same calls made one by one.

Every thread starts at a barrier and makes a mix of calls: uncached and cached chats
(duplicates across threads join one leader), streams, embeddings and batches, over
the three protocols. The answers must match those of a fresh service called
sequentially, and nothing may be left in flight.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from llmrelay import ChatResponse, LLMService
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory
from soak_helpers import count, report

THREADS = 64
MODELS = ["openai/gpt-4o-mini", "claude/claude-haiku-4-5", "local/llama3.2"]


def _ops(svc: LLMService, t: int, rounds: int) -> list[Any]:
    """The calls of thread ``t``, as comparable plain values."""
    out: list[Any] = []
    for r in range(rounds):
        model = MODELS[(t + r) % len(MODELS)]
        a = svc.chat(f"thread {t} round {r}", model, temperature=0.5)
        out.append(("chat", a.text, a.provider, a.usage.total_tokens))
        b = svc.chat(f"shared question {r % 4}", model, temperature=0)  # cached, deduplicated
        out.append(("cached", b.text, b.provider))
        chunks = list(svc.stream(f"stream {t} {r}", model))
        out.append(("stream", "".join(c.text for c in chunks), chunks[-1].finish_reason))
        if r % 2 == 0:
            e = svc.embed([f"embed {t}", f"embed {r}"], "openai/text-embedding-3-small")
            out.append(("embed", [[round(x, 6) for x in v] for v in e.embeddings]))
        batch = svc.batch([f"batch {t} {r} a", {"messages": f"batch {t} {r} b", "model": model}])
        out.append(
            ("batch", [x.text if isinstance(x, ChatResponse) else type(x).__name__ for x in batch])
        )
    return out


def test_sync_api_from_64_threads_matches_sequential(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    rounds = count(3, 20)
    for fake in fakes.values():
        fake.latency_s = 0.002  # calls overlap for real
    results: dict[int, list[Any]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)
    started = time.perf_counter()
    with LLMService(make_config()) as svc:

        def work(t: int) -> None:
            try:
                barrier.wait(30)
                results[t] = _ops(svc, t, rounds)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not any(th.is_alive() for th in threads)
        assert not errors, errors[:3]
        eng = svc._engine
        for name, rt in eng.orchestrator.runtimes.items():
            assert rt.scheduler.in_flight == 0 and rt.scheduler.queued == 0, name
        assert eng.dedup.in_flight() == 0 and eng.dedup.waiting() == 0
        snap = svc.metrics.snapshot()
    concurrent_s = time.perf_counter() - started
    provider_calls = sum(f.request_count for f in fakes.values())
    with LLMService(make_config()) as seq:
        expected = {t: _ops(seq, t, rounds) for t in range(THREADS)}
    assert results == expected
    report(
        "threads",
        {
            "threads": THREADS,
            "calls_per_thread": len(expected[0]),
            "provider_calls_concurrent": provider_calls,
            "dedup_joins": snap.total("dedup_joins"),
            "cache_hits": snap.total("cache_hits.memory"),
            "concurrent_wall_s": round(concurrent_s, 2),
        },
    )
