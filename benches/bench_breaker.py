"""pytest-benchmark of CircuitBreaker calls from Python (smoke tests in the normal run)."""

from __future__ import annotations

from typing import Any

from llmrelay import _core


def test_try_acquire_closed(benchmark: Any) -> None:
    b = _core.CircuitBreaker("dep")
    assert benchmark(b.try_acquire) is True


def test_record_success(benchmark: Any) -> None:
    b = _core.CircuitBreaker("dep")
    benchmark(b.record, "success", 0.01)
    assert b.state == "closed"


def test_try_acquire_open(benchmark: Any) -> None:
    b = _core.CircuitBreaker("dep", minimum_calls=1, open_duration_s=1e6, max_open_duration_s=1e6)
    b.record("failure")
    assert benchmark(b.try_acquire) is False


def test_state(benchmark: Any) -> None:
    b = _core.CircuitBreaker("dep")
    assert benchmark(lambda: b.state) == "closed"
