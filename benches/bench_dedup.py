"""pytest-benchmark of `RequestDeduplicator` calls from Python (smoke tests in the normal run)."""

from __future__ import annotations

from typing import Any

from llmrelay import _core

KEY = "8f14e45fceea167a5a36dedd4bea2543"


def test_join_leader_complete_pair(benchmark: Any) -> None:
    d = _core.RequestDeduplicator()
    value = {"text": "hi"}

    def pair() -> list[int]:
        _, ticket, _ = d.join(KEY)
        return d.complete(KEY, ticket, value)

    assert benchmark(pair) == []
    assert len(d) == 0


def test_join_follower_leave_pair(benchmark: Any) -> None:
    d = _core.RequestDeduplicator()
    d.join(KEY)

    def pair() -> None:
        _, ticket, _ = d.join(KEY)
        d.leave(KEY, ticket)

    benchmark(pair)
    assert (d.in_flight(), d.waiting()) == (1, 0)


def test_join_window_hit(benchmark: Any) -> None:
    d = _core.RequestDeduplicator(window_s=3600.0)
    _, ticket, _ = d.join(KEY)
    value = {"text": "hi"}
    d.complete(KEY, ticket, value)
    kind, _, got = benchmark(d.join, KEY)
    assert kind == _core.DEDUP_DONE and got is value
