"""RateLimiter: GCRA cells keyed by string, driven by a manual clock."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrelay import _core, errors

KEY = "dep/model:rpm"


def make(rate: float = 2.0, burst: float = 3.0) -> tuple[_core.RateLimiter, _core.ManualClock]:
    clock = _core.ManualClock(10.0)
    lim = _core.RateLimiter(clock=clock)
    lim.configure(KEY, rate, burst)
    return lim, clock


def test_unconfigured_key_is_unlimited() -> None:
    lim = _core.RateLimiter()
    assert lim.try_acquire("free", 1e9) == 0.0
    assert lim.reserve("free") == 0.0
    assert lim.available("free") == math.inf
    lim.refund("free", 1.0)
    lim.reconcile("free", 1.0, 5.0)
    lim.observe_headers("free", 0.0, None, 60.0)
    assert len(lim) == 0


def test_burst_then_rate() -> None:
    lim, clock = make()
    assert [lim.try_acquire(KEY) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.try_acquire(KEY) == pytest.approx(0.5)
    assert lim.try_acquire(KEY, 2.0) == pytest.approx(1.0)  # nothing was taken
    clock.advance(0.5)
    assert lim.try_acquire(KEY) == 0.0
    clock.advance(100.0)
    assert lim.available(KEY) == pytest.approx(3.0)


def test_reserve_is_fifo_and_books() -> None:
    lim, clock = make(rate=10.0, burst=1.0)
    delays = [lim.reserve(KEY) for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert lim.try_acquire(KEY) == pytest.approx(0.5)  # no queue jumping
    clock.advance(10.0)
    assert lim.reserve(KEY, 5.0) == pytest.approx(0.4)  # bigger than the burst: allowed


def test_reserve_many_books_each_key_and_returns_max() -> None:
    lim, _ = make(rate=1.0, burst=1.0)
    lim.configure("tpm", 100.0, 100.0)
    delay = lim.reserve_many([(KEY, 1.0), ("tpm", 300.0), ("free", 5.0)])
    assert delay == pytest.approx(2.0)
    assert lim.available(KEY) == 0.0
    with pytest.raises(errors.InvalidRequestError, match="cost=-1"):
        lim.reserve_many([("tpm", 1.0), (KEY, -1.0)])
    assert lim.reserve_many([]) == 0.0


def test_refund_and_reconcile() -> None:
    lim, clock = make(rate=1.0, burst=4.0)
    assert lim.reserve(KEY, 3.0) == 0.0
    lim.refund(KEY, 100.0)
    assert lim.available(KEY) == pytest.approx(4.0)  # never above the burst
    lim.reserve(KEY, 4.0)
    lim.reconcile(KEY, 4.0, 1.0)
    assert lim.available(KEY) == pytest.approx(3.0)
    lim.reconcile(KEY, 1.0, 6.0)  # charged 5 more: 2 in debt
    assert lim.available(KEY) == 0.0
    assert lim.try_acquire(KEY) == pytest.approx(3.0)
    clock.advance(3.0)
    assert lim.try_acquire(KEY) == 0.0


def test_observe_headers_tightens_never_loosens() -> None:
    lim, clock = make(rate=1.0, burst=10.0)
    lim.observe_headers(KEY, 2.0, 100.0, 5.0)
    assert lim.available(KEY) == 0.0
    clock.advance(5.0)
    assert lim.available(KEY) == pytest.approx(2.0)
    lim.observe_headers(KEY, 1000.0, None, 0.0)
    assert lim.available(KEY) == pytest.approx(2.0)


def test_idle_cells_are_dropped() -> None:
    clock = _core.ManualClock(0.0)
    lim = _core.RateLimiter(idle_ttl_s=5.0, clock=clock)
    for i in range(1000):
        lim.configure(f"k{i}", 1.0, 1.0)
    lim.reserve("k0", 100.0)  # booked far ahead: kept
    assert len(lim) == 1000
    clock.advance(6.0)
    assert lim.sweep() == 999
    assert len(lim) == 1
    # Lazy, amortised sweeping bounds memory under a stream of fresh keys.
    for rnd in range(30):
        for i in range(100):
            key = f"r{rnd}/{i}"
            lim.configure(key, 1.0, 1.0)
            for _ in range(20):
                lim.try_acquire(key, 0.0)
        clock.advance(6.0)
    assert len(lim) <= 500


def test_threads_never_overadmit() -> None:
    lim, _ = make(rate=1.0, burst=200.0)
    admitted: list[int] = []

    def worker() -> None:
        admitted.append(sum(lim.try_acquire(KEY) == 0.0 for _ in range(100)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sum(admitted) == 200


@pytest.mark.parametrize(
    ("rate", "burst", "needle"),
    [
        (0.0, 1.0, "rate_per_s=0"),
        (-1.0, 1.0, "rate_per_s=-1"),
        (math.nan, 1.0, "rate_per_s=NaN"),
        (math.inf, 1.0, "rate_per_s=inf"),
        (1.0, 0.5, "burst=0.5"),
        (1.0, math.inf, "burst=inf"),
    ],
)
def test_configure_rejects_bad_values(rate: float, burst: float, needle: str) -> None:
    lim = _core.RateLimiter()
    with pytest.raises(errors.ConfigError, match=needle):
        lim.configure(KEY, rate, burst)


def test_constructor_rejects_bad_ttl() -> None:
    with pytest.raises(errors.ConfigError, match="idle_ttl_s=0"):
        _core.RateLimiter(idle_ttl_s=0.0)
    with pytest.raises(errors.ConfigError, match="idle_ttl_s=NaN"):
        _core.RateLimiter(idle_ttl_s=math.nan)
    assert len(_core.RateLimiter(idle_ttl_s=math.inf)) == 0


@pytest.mark.parametrize("cost", [-1.0, math.nan, math.inf])
def test_bad_cost_is_named(cost: float) -> None:
    lim, _ = make()
    for call in (lim.try_acquire, lim.reserve, lim.refund):
        with pytest.raises(errors.InvalidRequestError, match="cost="):
            call(KEY, cost)
    with pytest.raises(errors.InvalidRequestError, match="estimated="):
        lim.reconcile(KEY, cost, 1.0)
    with pytest.raises(errors.InvalidRequestError, match="actual="):
        lim.reconcile(KEY, 1.0, cost)
    with pytest.raises(errors.InvalidRequestError, match="remaining="):
        lim.observe_headers(KEY, cost, None, 1.0)
    with pytest.raises(errors.InvalidRequestError, match="reset_s="):
        lim.observe_headers(KEY, 1.0, None, cost)


def test_try_acquire_above_burst_is_refused() -> None:
    lim, _ = make(burst=3.0)
    with pytest.raises(errors.InvalidRequestError, match=r"cost=4 exceeds burst=3"):
        lim.try_acquire(KEY, 4.0)
    with pytest.raises(errors.InvalidRequestError, match="limit=0"):
        lim.observe_headers(KEY, 1.0, 0.0, 1.0)


def test_wrong_types_raise_type_error() -> None:
    lim = _core.RateLimiter()
    with pytest.raises(TypeError):
        lim.try_acquire(1, 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _core.RateLimiter(600.0)  # type: ignore[misc]


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(0.5, 50.0),
    burst=st.floats(1.0, 20.0),
    steps=st.lists(st.tuples(st.floats(0.0, 0.4), st.booleans(), st.floats(0.0, 1.0)), max_size=40),
)
def test_never_admits_more_than_burst_plus_rate(
    rate: float, burst: float, steps: list[tuple[float, bool, float]]
) -> None:
    lim, clock = make(rate, burst)
    events: list[tuple[float, float]] = []
    for dt, reserve, frac in steps:
        clock.advance(dt)
        cost = frac * burst
        if reserve:
            events.append((clock.now() + lim.reserve(KEY, cost), cost))
        elif lim.try_acquire(KEY, cost) == 0.0:
            events.append((clock.now(), cost))
    for i in range(len(events)):
        total = 0.0
        for j in range(i, len(events)):
            total += events[j][1]
            span = events[j][0] - events[i][0]
            assert total <= burst + rate * span + 1e-6 * (1 + total)
