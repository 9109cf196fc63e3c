"""pytest-benchmark of core operations called from Python (smoke tests in the normal run)."""

from __future__ import annotations

from typing import Any

from llmrelay import _core


def test_manual_clock_now(benchmark: Any) -> None:
    clock = _core.ManualClock(2.0)
    assert benchmark(clock.now) == 2.0
