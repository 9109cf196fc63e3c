"""The core's Gate from Python: one call per step, typed refusals, nothing leaked."""

from __future__ import annotations

import pytest

from llmrelay import _core
from llmrelay.errors import (
    CircuitOpenError,
    ClientThrottledError,
    InvalidRequestError,
    QueueFullError,
)


def _gate(**kw: object) -> tuple[_core.Gate, _core.RateLimiter, _core.ManualClock]:
    clock = _core.ManualClock()
    lim = _core.RateLimiter(clock=clock)
    opts: dict[str, object] = {
        "max_concurrency": 1,
        "max_queue": 1,
        "adaptive": False,
        "minimum_calls": 2,
        "window_size": 2,
        "open_duration_s": 5.0,
    }
    opts.update(kw)
    return _core.Gate("dep", limiter=lim, clock=clock, **opts), lim, clock  # type: ignore[arg-type]


def test_permit_wait_resume_settle() -> None:
    g, _, _ = _gate()
    kind, a, delay = g.admit(5, 10, 5, 1.0, 1.0, True)
    assert (kind, delay) == (_core.GATE_PERMIT, 0.0)
    kind, b, delay = g.admit(5, 10, 5, 1.0, 1.0)
    assert (kind, delay) == (_core.GATE_WAIT, 0.0)
    assert g.settle(a, _core.SUCCESS, 0.01) == [b]
    assert g.resume(b) == (_core.GATE_PERMIT, b, 0.0)
    assert g.settle(b, _core.SUCCESS, 0.01) == []
    s = g.stats()
    assert (s["entries"], s["outstanding"], s["permits"]) == (0, 0, 2)
    assert g.scheduler.in_flight == 0 and g.scheduler.queued == 0


def test_refusals_are_typed_and_give_everything_back() -> None:
    g, lim, clock = _gate()
    key = g.configure_limit("rpm", 1.0, 3.0)
    assert key == "dep:rpm" and g.rate_keys() == {"rpm": key}
    _, a, _ = g.admit(0, 0, 0, 10.0, 10.0)
    _, queued, _ = g.admit(0, 0, 0, 10.0, 10.0)
    with pytest.raises(QueueFullError):  # one slot, one queued: full; refunded
        g.admit(0, 0, 0, 10.0, 10.0)
    assert g.limiter_stats() == {"outstanding": 1.0, "available.rpm": 1.0}
    g.configure_limit("tpm", 10.0, 10.0)
    with pytest.raises(ClientThrottledError) as info:  # 20 tokens: a second away
        g.admit(0, 15, 5, 0.5, 10.0)
    assert info.value.retry_after == pytest.approx(1.0)
    assert "too far off" in str(info.value)
    assert g.limiter_stats() == {
        "outstanding": 1.0,
        "available.rpm": 1.0,
        "available.tpm": 10.0,
    }
    assert g.cancel(queued) == [] and g.cancel(queued) == []
    g.settle(a, _core.FAILURE, 0.0)
    _, b, _ = g.admit(0, 0, 0, 10.0, 10.0)
    clock.advance(1.0)
    g.settle(b, _core.OVERLOAD, 0.0)
    assert g.is_open() and g.breaker.state == "open"
    with pytest.raises(CircuitOpenError) as opened:
        g.admit(0, 0, 0, 10.0, 10.0)
    assert opened.value.deployment == "dep" and opened.value.retry_after == pytest.approx(5.0)
    clock.advance(3600)
    assert lim.available(key) == pytest.approx(3.0)
    assert g.limiter_stats()["outstanding"] == 0.0


def test_deadline_outcome_is_not_the_deployments_fault() -> None:
    g, _, _ = _gate(max_concurrency=8, adaptive=True)
    for _ in range(4):
        _, e, _ = g.admit(0, 0, 0, 1.0, 1.0)
        g.settle(e, _core.DEADLINE, 0.3)
    assert g.breaker.failure_rate == 0.0 and g.breaker.state == "closed"
    assert g.scheduler.limit == 8
    assert g.stats()["deadline_cuts"] == 4


def test_bad_arguments_are_invalid_request_errors() -> None:
    g, _, _ = _gate()
    with pytest.raises(InvalidRequestError) as e:
        g.admit(10, 0, 0, 1.0, 1.0)
    assert e.value.field == "priority"
    _, a, _ = g.admit(0, 0, 0, 1.0, 1.0)
    with pytest.raises(InvalidRequestError) as e:
        g.settle(a, 99, 0.0)
    assert e.value.field == "outcome"
    with pytest.raises(InvalidRequestError):
        g.settle(a, _core.SUCCESS, 0.0, -1, 0)
    with pytest.raises(InvalidRequestError):
        g.resume(12345)
    with pytest.raises(InvalidRequestError) as e:
        g.configure_limit("rps", 1.0, 1.0)
    assert e.value.field == "dim"
    g.settle(a, _core.SUCCESS, 0.0)
    assert g.stats()["entries"] == 0
