"""pytest-benchmark of Metrics operations called from Python (smoke tests in the normal run)."""

from __future__ import annotations

from typing import Any

from llmrelay import _core

S = ("openai", "gpt-4o-mini", "default")


def test_incr(benchmark: Any) -> None:
    m = _core.Metrics()
    m.incr(*S, "requests")
    benchmark(m.incr, *S, "requests", 1)
    assert m.counter(*S, "requests") >= 2


def test_observe(benchmark: Any) -> None:
    m = _core.Metrics()
    benchmark(m.observe, *S, "latency", 0.123)
    assert m.histogram_buckets(*S, "latency", [1.0])[0] >= 1


def test_set_gauge(benchmark: Any) -> None:
    m = _core.Metrics()
    benchmark(m.set_gauge, *S, "in_flight", 3.0)
    assert m.snapshot()[0]["gauges"] == {"in_flight": 3.0}


def test_counter(benchmark: Any) -> None:
    m = _core.Metrics()
    m.incr(*S, "requests", 7)
    assert benchmark(m.counter, *S, "requests") == 7


def test_record_request(benchmark: Any) -> None:
    """One finished request: four counters and three observations in one call."""
    m = _core.Metrics()
    counters = [("requests", 1), ("successes", 1), ("tokens_in", 120), ("tokens_out", 300)]
    observations = [("latency", 0.8), ("ttft", 0.2), ("queue_wait", 0.001)]
    benchmark(m.record, *S, counters, observations)
    assert m.counter(*S, "tokens_out") >= 300


def test_snapshot_20_series(benchmark: Any) -> None:
    m = _core.Metrics()
    for i in range(20):
        m.record("p", f"model-{i}", "d", [("requests", 1)], [("latency", 0.1)])
    assert len(benchmark(m.snapshot)) == 20
