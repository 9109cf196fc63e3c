"""pytest-benchmark of `PriorityScheduler` calls from Python (smoke tests in the normal run)."""

from __future__ import annotations

from typing import Any

from llmrelay import _core


def test_acquire_release_granted_pair(benchmark: Any) -> None:
    s = _core.PriorityScheduler()

    def pair() -> list[int]:
        ticket, _ = s.acquire(2)
        return s.release(ticket, "success", 0.01)

    assert benchmark(pair) == []
    assert (s.in_flight, s.queued) == (0, 0)


def test_acquire_only(benchmark: Any) -> None:
    s = _core.PriorityScheduler(max_concurrency=1, max_queue=10**9)
    s.acquire(0)
    ticket, granted = benchmark(s.acquire, 4)
    assert not granted and ticket > 1


def test_queue_then_handover_pair(benchmark: Any) -> None:
    s = _core.PriorityScheduler(max_concurrency=1, adaptive=False)
    running = [s.acquire(0)[0]]

    def pair() -> int:
        s.acquire(3)
        (running[0],) = s.release(running[0])
        return running[0]

    assert benchmark(pair) > 1
    assert (s.in_flight, s.queued) == (1, 0)


def test_acquire_cancel_pair(benchmark: Any) -> None:
    s = _core.PriorityScheduler(max_concurrency=1)
    s.acquire(0)

    def pair() -> list[int]:
        ticket, _ = s.acquire(5)
        return s.cancel(ticket)

    assert benchmark(pair) == []
    assert s.queued == 0
