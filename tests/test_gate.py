"""The core's Gate from Python: one call per step, typed refusals, nothing leaked."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llmrelay import _core
from llmrelay._transport import _completions
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


async def test_a_parked_future_is_woken_by_the_settle_that_grants_its_slot() -> None:
    g, _, _ = _gate(max_queue=2)
    loop = asyncio.get_running_loop()
    _, a, _ = g.admit(0, 0, 0, 10.0, 10.0)
    _, b, _ = g.admit(0, 0, 0, 10.0, 10.0)
    _, c, _ = g.admit(0, 0, 0, 10.0, 10.0)
    fut_b: asyncio.Future[None] = loop.create_future()
    fut_c: asyncio.Future[None] = loop.create_future()
    assert g.park(b, fut_b, _completions(loop)) and g.park(c, fut_c, _completions(loop))
    assert g.parked() == [b, c]
    g.cancel(c)  # gives up: its future is dropped, never woken
    assert g.parked() == [b]
    assert g.settle(a, _core.SUCCESS, 0.0) == [b]
    assert g.parked() == []
    assert await asyncio.wait_for(fut_b, 5) is None
    assert not fut_c.done()
    assert g.resume(b) == (_core.GATE_PERMIT, b, 0.0)
    # not queued (a permit): nothing to park, resume at once
    assert not g.park(b, loop.create_future(), _completions(loop))
    g.settle(b, _core.SUCCESS, 0.0)
    assert g.stats()["entries"] == 0


def test_a_waiter_on_another_loop_is_woken_from_this_thread() -> None:
    g, _, _ = _gate()
    _, a, _ = g.admit(0, 0, 0, 10.0, 10.0)
    _, b, _ = g.admit(0, 0, 0, 10.0, 10.0)
    parked = threading.Event()
    got: list[tuple[int, int, float]] = []

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        assert g.park(b, fut, _completions(loop))
        parked.set()
        await asyncio.wait_for(fut, 10)
        got.append(g.resume(b))

    th = threading.Thread(target=asyncio.run, args=(wait(),))
    th.start()
    assert parked.wait(10)
    g.settle(a, _core.SUCCESS, 0.0)
    th.join(10)
    assert not th.is_alive() and got == [(_core.GATE_PERMIT, b, 0.0)]
    g.settle(b, _core.SUCCESS, 0.0)
