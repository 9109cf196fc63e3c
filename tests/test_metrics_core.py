"""The native Metrics: counters, gauges, latency histograms per series, from Python."""

from __future__ import annotations

import math
import threading

import pytest

from llmrelay import _core, errors

S = ("openai", "gpt-4o", "east")


def test_counters_add_per_series_and_name() -> None:
    m = _core.Metrics()
    assert m.counter(*S, "requests") == 0
    m.incr(*S, "requests")
    m.incr(*S, "requests", 4)
    m.incr(*S, "failures.RateLimitError", 0)
    m.incr("anthropic", "claude", "default", "requests", 2)
    assert m.counter(*S, "requests") == 5
    assert m.counter(*S, "failures.RateLimitError") == 0
    assert m.counter("anthropic", "claude", "default", "requests") == 2
    assert m.series_count() == 2


def test_record_batches_counters_and_observations() -> None:
    m = _core.Metrics()
    for _ in range(3):
        m.record(
            *S,
            [("requests", 1), ("successes", 1), ("tokens_in", 12), ("tokens_out", 30)],
            [("latency", 0.5), ("ttft", 0.1), ("queue_wait", 0.0)],
        )
    m.record(*S, [], [])
    assert m.counter(*S, "tokens_out") == 90
    (series,) = m.snapshot()
    assert series["counters"] == {"requests": 3, "successes": 3, "tokens_in": 36, "tokens_out": 90}
    hists = series["histograms"]
    assert isinstance(hists, dict)
    assert sorted(hists) == ["latency", "queue_wait", "ttft"]
    assert hists["latency"]["count"] == 3
    assert hists["latency"]["sum_s"] == pytest.approx(1.5)


def test_snapshot_is_plain_sorted_data() -> None:
    m = _core.Metrics()
    m.incr("b", "m", "d", "requests")
    m.set_gauge("a", "m", "d", "in_flight", 2.0)
    m.set_gauge("a", "m", "d", "in_flight", 1.0)
    m.observe("a", "m", "d", "latency", 0.25)
    snap = m.snapshot()
    assert [s["provider"] for s in snap] == ["a", "b"]
    first = snap[0]
    assert set(first) == {"provider", "model", "deployment", "counters", "gauges", "histograms"}
    assert first["model"] == "m" and first["deployment"] == "d"
    assert first["counters"] == {} and first["gauges"] == {"in_flight": 1.0}
    lat = first["histograms"]["latency"]  # type: ignore[index]
    assert set(lat) == {
        "count",
        "sum_s",
        "min_s",
        "max_s",
        "mean_s",
        "p50_s",
        "p90_s",
        "p95_s",
        "p99_s",
    }
    assert lat["count"] == 1 and lat["p50_s"] == lat["p99_s"] == 0.25
    assert type(lat["count"]) is int and type(lat["mean_s"]) is float
    # The snapshot is a copy: later updates and mutations do not interact.
    m.incr("b", "m", "d", "requests")
    assert snap[1]["counters"] == {"requests": 1}
    snap[1]["counters"] = {}
    assert m.counter("b", "m", "d", "requests") == 2


def test_percentiles_within_hdr_precision() -> None:
    m = _core.Metrics()
    for ms in range(1, 1001):
        m.observe(*S, "latency", ms / 1000)
    lat = m.snapshot()[0]["histograms"]["latency"]  # type: ignore[index]
    assert lat["count"] == 1000
    assert lat["min_s"] == 0.001 and lat["max_s"] == 1.0
    assert lat["mean_s"] == pytest.approx(0.5005)
    for key, want in (("p50_s", 0.5), ("p90_s", 0.9), ("p95_s", 0.95), ("p99_s", 0.99)):
        assert lat[key] == pytest.approx(want, rel=1e-3, abs=1e-6), key


def test_histogram_buckets_are_cumulative() -> None:
    m = _core.Metrics()
    for s in (0.01, 0.1, 0.2, 0.2, 5.0):
        m.observe(*S, "latency", s)
    bounds = [0.05, 0.1, 0.25, 1.0, math.inf]
    assert m.histogram_buckets(*S, "latency", bounds) == [1, 2, 4, 4, 5]
    assert m.histogram_buckets(*S, "ttft", bounds) == [0, 0, 0, 0, 0]
    assert m.histogram_buckets(*S, "latency", []) == []


def test_reset_drops_every_series() -> None:
    m = _core.Metrics()
    m.record(*S, [("requests", 2)], [("latency", 0.3)])
    m.set_gauge(*S, "in_flight", 1.0)
    m.reset()
    assert m.series_count() == 0
    assert m.snapshot() == []
    assert m.counter(*S, "requests") == 0
    assert m.histogram_buckets(*S, "latency", [1.0]) == [0]
    m.incr(*S, "requests")
    assert m.counter(*S, "requests") == 1
    assert repr(m) == "Metrics(series=1)"


def test_threads_sum_exactly() -> None:
    m = _core.Metrics()

    def work() -> None:
        for i in range(2000):
            m.record(*S, [("requests", 1), ("tokens_in", 3)], [("latency", i / 10_000)])
            m.incr(*S, "retries")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.counter(*S, "requests") == 8000
    assert m.counter(*S, "tokens_in") == 24_000
    assert m.counter(*S, "retries") == 8000
    assert m.snapshot()[0]["histograms"]["latency"]["count"] == 8000  # type: ignore[index]


@pytest.mark.parametrize("seconds", [-0.1, math.nan, math.inf])
def test_observe_rejects_bad_seconds(seconds: float) -> None:
    m = _core.Metrics()
    with pytest.raises(errors.InvalidRequestError, match="seconds"):
        m.observe(*S, "latency", seconds)
    assert m.series_count() == 0


def test_record_rejects_bad_input_and_records_nothing() -> None:
    m = _core.Metrics()
    with pytest.raises(errors.InvalidRequestError, match=r"seconds.*ttft"):
        m.record(*S, [("requests", 1)], [("latency", 0.1), ("ttft", -1.0)])
    with pytest.raises(errors.InvalidRequestError, match=r"counters.*requests.*-1"):
        m.record(*S, [("requests", -1)], [("latency", 0.1)])
    assert m.series_count() == 0
    with pytest.raises(TypeError):
        m.record(*S, [("requests", "1")], [])  # type: ignore[list-item]


def test_incr_and_gauge_reject_bad_values() -> None:
    m = _core.Metrics()
    with pytest.raises(errors.InvalidRequestError, match=r"n: .*-3"):
        m.incr(*S, "requests", -3)
    with pytest.raises(errors.InvalidRequestError, match="value"):
        m.set_gauge(*S, "in_flight", math.nan)
    with pytest.raises(TypeError):
        m.incr(*S, "requests", 1.5)  # type: ignore[arg-type]
    assert m.series_count() == 0


@pytest.mark.parametrize("bounds", [[0.2, 0.1], [0.1, 0.1], [-1.0], [math.nan]])
def test_histogram_buckets_rejects_bad_bounds(bounds: list[float]) -> None:
    m = _core.Metrics()
    m.observe(*S, "latency", 0.1)
    with pytest.raises(errors.InvalidRequestError, match="bounds_s"):
        m.histogram_buckets(*S, "latency", bounds)
