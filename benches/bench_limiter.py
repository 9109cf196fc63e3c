"""pytest-benchmark of RateLimiter calls from Python (smoke tests in the normal run)."""

from __future__ import annotations

from typing import Any

from llmrelay import _core

KEY = "deployment/model:rpm"


def loaded() -> _core.RateLimiter:
    lim = _core.RateLimiter()
    for i in range(1000):
        lim.configure(f"deployment-{i}/model:rpm", 1e12, 1e12)
    lim.configure(KEY, 1e12, 1e12)
    return lim


def test_try_acquire_admit(benchmark: Any) -> None:
    lim = loaded()
    assert benchmark(lim.try_acquire, KEY, 1.0) == 0.0


def test_try_acquire_refuse(benchmark: Any) -> None:
    lim = _core.RateLimiter()
    lim.configure(KEY, 1e-3, 1.0)
    lim.try_acquire(KEY)
    assert benchmark(lim.try_acquire, KEY, 1.0) > 0.0


def test_reserve(benchmark: Any) -> None:
    lim = loaded()
    assert benchmark(lim.reserve, KEY, 1.0) == 0.0


def test_reserve_many_three_keys(benchmark: Any) -> None:
    lim = loaded()
    items = [(KEY, 1.0), ("deployment-1/model:rpm", 300.0), ("deployment-2/model:rpm", 1.0)]
    assert benchmark(lim.reserve_many, items) == 0.0


def test_refund(benchmark: Any) -> None:
    lim = loaded()
    benchmark(lim.refund, KEY, 1.0)
    assert lim.available(KEY) > 0.0


def test_unconfigured_key(benchmark: Any) -> None:
    lim = loaded()
    assert benchmark(lim.try_acquire, "nope", 1.0) == 0.0
