"""CircuitBreaker: closed / open / half-open on a count-based window, manual clock."""

from __future__ import annotations

import math
from typing import Any

import pytest

from llmrelay import _core, errors


def make(**kw: Any) -> tuple[_core.CircuitBreaker, _core.ManualClock]:
    clock = _core.ManualClock(0.0)
    opts: dict[str, Any] = {"minimum_calls": 4, "window_size": 4, "open_duration_s": 10.0}
    opts.update(kw)
    return _core.CircuitBreaker("openai/gpt", clock=clock, **opts), clock


def trip(b: _core.CircuitBreaker, n: int = 4) -> None:
    for _ in range(n):
        b.record("failure")


def test_defaults_and_name() -> None:
    b = _core.CircuitBreaker("dep")
    assert b.name == "dep"
    assert b.state == "closed"
    assert b.try_acquire()
    b.acquire()
    assert b.failure_rate == 0.0 and b.slow_call_rate == 0.0 and b.retry_after_s == 0.0
    assert b.transitions() == {
        "closed->open": 0,
        "open->half_open": 0,
        "half_open->closed": 0,
        "half_open->open": 0,
    }
    assert "dep" in repr(b)


def test_trips_after_minimum_calls_and_refuses() -> None:
    b, clock = make()
    trip(b, 3)
    assert b.state == "closed"
    b.record("success")
    assert b.state == "open"
    assert b.failure_rate == 0.75
    assert not b.try_acquire()
    with pytest.raises(errors.CircuitOpenError) as info:
        b.acquire()
    assert info.value.deployment == "openai/gpt"
    assert info.value.retry_after == pytest.approx(10.0)
    clock.advance(4.0)
    assert b.retry_after_s == pytest.approx(6.0)


def test_half_open_probe_success_closes() -> None:
    b, clock = make(half_open_max_calls=2)
    trip(b)
    clock.advance(10.0)
    assert b.state == "half_open"  # reading the state applies the lazy transition
    assert b.try_acquire() and b.try_acquire()
    assert not b.try_acquire()
    with pytest.raises(errors.CircuitOpenError):
        b.acquire()
    b.record("success")
    b.record("success")
    assert b.state == "closed"
    stats = b.stats()
    assert stats["calls"] == 0 and stats["trips"] == 0
    assert b.transitions() == {
        "closed->open": 1,
        "open->half_open": 1,
        "half_open->closed": 1,
        "half_open->open": 0,
    }


def test_failed_probe_reopens_with_backoff() -> None:
    b, clock = make(open_backoff_multiplier=2.0, max_open_duration_s=30.0)
    trip(b)
    for wait in (10.0, 20.0, 30.0, 30.0):
        assert b.retry_after_s == pytest.approx(wait)
        clock.advance(wait)
        assert b.try_acquire()
        b.record("failure")
        assert b.state == "open"
    assert b.stats()["trips"] == 5
    assert b.transitions()["half_open->open"] == 4


def test_ignored_probe_returns_permit() -> None:
    b, clock = make()
    trip(b)
    clock.advance(10.0)
    assert b.try_acquire()
    assert not b.try_acquire()
    b.record("ignored")  # e.g. a 429, or a cancelled probe
    assert b.state == "half_open"
    assert b.try_acquire()
    b.record("success")
    assert b.state == "closed"


def test_ignored_calls_are_not_counted() -> None:
    b, _ = make()
    for _ in range(10):
        b.record("ignored")
    assert b.stats()["calls"] == 0
    assert b.state == "closed"


def test_slow_calls_trip() -> None:
    b, _ = make(slow_call_duration_s=1.0, slow_call_rate_threshold=0.5)
    b.record("success", 0.5)
    b.record("success", 1.0)
    b.record("success", 2.0)
    assert b.stats()["slow_calls"] == 1
    b.record("success", 5.0)
    assert b.state == "open"
    assert b.slow_call_rate == 0.5


def test_minimum_calls_above_window_waits_for_full_window() -> None:
    b, _ = make(minimum_calls=100, window_size=3)
    trip(b, 2)
    assert b.state == "closed"
    b.record("failure")
    assert b.state == "open"


def test_reset() -> None:
    b, _ = make()
    trip(b)
    b.reset()
    assert b.state == "closed"
    assert b.try_acquire()
    assert b.stats()["failures"] == 0


def test_stats_keys() -> None:
    b, _ = make()
    b.record("failure", 0.1)
    s = b.stats()
    assert s["state"] == "closed"
    assert s["calls"] == 1 and s["failures"] == 1 and s["failure_rate"] == 1.0
    assert {"slow_calls", "slow_call_rate", "trips", "retry_after_s"} <= s.keys()


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold=1.5"),
        ({"failure_rate_threshold": math.nan}, "failure_rate_threshold=NaN"),
        ({"slow_call_rate_threshold": -0.1}, "slow_call_rate_threshold=-0.1"),
        ({"slow_call_duration_s": 0.0}, "slow_call_duration_s=0"),
        ({"slow_call_duration_s": math.inf}, "slow_call_duration_s=inf"),
        ({"minimum_calls": 0}, "minimum_calls=0"),
        ({"window_size": -1}, "window_size=-1"),
        ({"window_size": 10**7}, "window_size=10000000"),
        ({"open_duration_s": -1.0}, "open_duration_s=-1"),
        ({"open_backoff_multiplier": 0.5}, "open_backoff_multiplier=0.5"),
        ({"max_open_duration_s": 1.0}, "max_open_duration_s=1"),
        ({"half_open_max_calls": 0}, "half_open_max_calls=0"),
    ],
)
def test_bad_config_is_named(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(errors.ConfigError, match=needle):
        _core.CircuitBreaker("x", **kw)


def test_bad_record_is_named() -> None:
    b, _ = make()
    with pytest.raises(errors.InvalidRequestError, match='outcome="boom"'):
        b.record("boom")
    with pytest.raises(errors.InvalidRequestError, match="duration_s=-1"):
        b.record("success", -1.0)
    with pytest.raises(errors.InvalidRequestError, match="duration_s=NaN"):
        b.record("success", math.nan)
