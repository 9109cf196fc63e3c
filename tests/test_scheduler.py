"""`_core.PriorityScheduler`: priority order, FIFO, aging, bounded queue, AIMD, no leaks."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrelay import _core, errors


def fixed(
    slots: int,
    *,
    max_queue: int = 10000,
    aging_s: float = 10.0,
    clock: _core.ManualClock | None = None,
) -> _core.PriorityScheduler:
    return _core.PriorityScheduler(
        max_concurrency=slots, adaptive=False, max_queue=max_queue, aging_s=aging_s, clock=clock
    )


def test_grants_then_queues_then_hands_over() -> None:
    s = fixed(2)
    a, now_a = s.acquire(5)
    b, now_b = s.acquire(5)
    c, now_c = s.acquire(5)
    assert (now_a, now_b, now_c) == (True, True, False)
    assert (s.in_flight, s.queued, s.max_queue) == (2, 1, 10000)
    assert s.release(a) == [c]
    assert s.release(b, "success", 0.2) == []
    assert s.release(c, outcome="error") == []
    assert (s.in_flight, s.queued) == (0, 0)
    assert len({a, b, c}) == 3


def test_priority_order_under_concurrency_one() -> None:
    s = fixed(1)
    running, _ = s.acquire(9)
    priorities = [7, 3, 9, 0, 5, 1, 0]
    by_ticket = {s.acquire(p)[0]: p for p in priorities}
    served = []
    for _ in priorities:
        (running,) = s.release(running)
        served.append(by_ticket[running])
    assert served == sorted(priorities)


def test_fifo_within_priority() -> None:
    s = fixed(1)
    running, _ = s.acquire(4)
    queued = [s.acquire(4)[0] for _ in range(6)]
    for t in queued:
        assert s.release(running) == [t]
        running = t


def test_aging_lets_priority_nine_overtake_priority_zero_stream() -> None:
    clock = _core.ManualClock()
    s = fixed(1, aging_s=1.0, clock=clock)
    running, _ = s.acquire(0)
    low, _ = s.acquire(9)
    served_at = None
    for step in range(50):
        s.acquire(0)
        clock.advance(0.5)
        (running,) = s.release(running)
        if running == low:
            served_at = step
            break
    assert served_at is not None, "priority 9 starved"
    assert 15 <= served_at <= 20
    assert s.queue_wait_s(low) == pytest.approx((served_at + 1) * 0.5)


def test_queue_full_is_immediate_and_typed() -> None:
    s = fixed(1, max_queue=2)
    s.acquire(0)
    s.acquire(0)
    s.acquire(0)
    with pytest.raises(errors.QueueFullError) as exc:
        s.acquire(0)
    assert exc.value.capacity == 2 and exc.value.retryable
    assert s.stats()["rejected_total"] == 1
    never_queue = fixed(1, max_queue=0)
    never_queue.acquire(0)
    with pytest.raises(errors.QueueFullError, match="queue full"):
        never_queue.acquire(0)


def test_cancel_queued_running_unknown_is_idempotent() -> None:
    s = fixed(1)
    a, _ = s.acquire(0)
    b, _ = s.acquire(0)
    c, _ = s.acquire(0)
    assert s.cancel(b) == []
    assert s.cancel(b) == []
    assert s.cancel(a) == [c]
    assert s.cancel(a) == []
    assert s.cancel(-3) == []
    assert s.cancel(10**6) == []
    assert s.cancel(c) == []
    assert (s.in_flight, s.queued, s.stats()["cancelled_total"]) == (0, 0, 3)


def test_aimd_decrease_increase_and_clamp() -> None:
    s = _core.PriorityScheduler(max_concurrency=8, min_concurrency=2)
    assert s.limit == 8.0
    held = [s.acquire(0)[0] for _ in range(4)]
    s.release(held.pop(), "overload")
    assert s.limit == 4.0
    # Granted before that decrease: the same congestion event decreases once.
    s.release(held.pop(), "overload")
    assert s.limit == 4.0
    for t in held:
        s.release(t, "error")
    assert s.limit == 4.0, "error leaves the limit alone"
    for expect in (2.0, 2.0):
        t, _ = s.acquire(0)
        s.release(t, "overload")
        assert s.limit == expect
    st_ = s.stats()
    assert (st_["overloads"], st_["decreases"]) == (4, 2)
    # Two in flight >= limit/2: a success adds increase_step / limit.
    a, _ = s.acquire(0)
    b, _ = s.acquire(0)
    s.release(a, "success", 0.05)
    assert s.limit == pytest.approx(2.5)
    s.release(b, "success", 0.05)
    assert s.limit == pytest.approx(2.5), "one of 2.5 in flight: not busy enough"


def test_aimd_increase_clamps_at_max() -> None:
    s = _core.PriorityScheduler(max_concurrency=8, initial_concurrency=4, increase_step=2.0)
    held = [s.acquire(0)[0] for _ in range(3)]
    for _ in range(40):
        t, now = s.acquire(0)
        assert now
        s.release(t, "success", 0.05)
    assert s.limit == 8.0
    assert s.stats()["latency_ewma_s"] == pytest.approx(0.05)
    for t in held:
        s.release(t, "ignored")


def test_no_increase_while_mostly_idle() -> None:
    s = _core.PriorityScheduler(max_concurrency=10, initial_concurrency=4)
    for _ in range(10):
        t, _ = s.acquire(1)
        s.release(t, "success")
    assert s.limit == 4.0
    assert s.stats()["increases"] == 0


def test_set_limit_grants_queued_in_priority_order() -> None:
    clock = _core.ManualClock()
    s = _core.PriorityScheduler(max_concurrency=8, initial_concurrency=1, clock=clock)
    s.acquire(0)
    q = [s.acquire(p)[0] for p in (2, 1, 2)]
    clock.advance(0.25)
    assert s.set_limit(3.5) == [q[1], q[0]]
    assert s.set_limit(100) == [q[2]]
    assert s.limit == 8.0
    assert s.queue_wait_s(q[0]) == pytest.approx(0.25)
    assert s.stats()["max_wait_s"] == pytest.approx(0.25)
    assert s.queue_wait_s(12345) == 0.0
    with pytest.raises(errors.ConfigError, match="limit=NaN"):
        s.set_limit(float("nan"))
    with pytest.raises(errors.ConfigError, match="limit=0"):
        s.set_limit(0)


def test_bad_calls_raise_typed_errors_naming_the_argument() -> None:
    s = fixed(1)
    for bad in (-1, 10, 2**40):
        with pytest.raises(errors.InvalidRequestError, match=f"priority={bad}"):
            s.acquire(bad)
    t, _ = s.acquire(0)
    q, _ = s.acquire(0)
    with pytest.raises(errors.InvalidRequestError, match="outcome"):
        s.release(t, "teapot")
    with pytest.raises(errors.InvalidRequestError, match="latency_s"):
        s.release(t, "success", -1.0)
    for bad_ticket in (q, 999, -7):
        with pytest.raises(errors.InvalidRequestError, match=f"ticket {bad_ticket}"):
            s.release(bad_ticket)
    assert (s.in_flight, s.queued) == (1, 1), "failed calls change nothing"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_concurrency": 0}, "max_concurrency=0"),
        ({"max_concurrency": -2}, "max_concurrency=-2"),
        ({"min_concurrency": 0}, "min_concurrency=0"),
        ({"min_concurrency": 65}, "min_concurrency=65"),
        ({"initial_concurrency": 65}, "initial_concurrency=65"),
        ({"initial_concurrency": 0}, "initial_concurrency=0"),
        ({"max_queue": -1}, "max_queue=-1"),
        ({"aging_s": 0.0}, "aging_s=0"),
        ({"aging_s": float("inf")}, "aging_s=inf"),
        ({"decrease_factor": 1.0}, "decrease_factor=1"),
        ({"decrease_factor": 0.0}, "decrease_factor=0"),
        ({"increase_step": 0.0}, "increase_step=0"),
        ({"increase_step": float("nan")}, "increase_step=NaN"),
    ],
)
def test_config_errors_name_param_and_value(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(errors.ConfigError, match=needle):
        _core.PriorityScheduler(**kwargs)  # type: ignore[arg-type]


def test_repr_and_stats_keys() -> None:
    s = _core.PriorityScheduler()
    assert "PriorityScheduler(limit=64.00" in repr(s)
    assert {"limit", "in_flight", "queued", "granted_total", "rejected_total"} <= set(s.stats())


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10**6)), max_size=120),
    slots=st.integers(1, 4),
    max_queue=st.integers(0, 6),
)
def test_random_sequences_leak_nothing(
    ops: list[tuple[int, int]], slots: int, max_queue: int
) -> None:
    clock = _core.ManualClock()
    s = _core.PriorityScheduler(max_concurrency=slots, max_queue=max_queue, clock=clock)
    running: set[int] = set()
    queued: set[int] = set()
    granted: set[int] = set()

    def grant(tickets: list[int]) -> None:
        for t in tickets:
            assert t in queued and t not in granted
            queued.discard(t)
            running.add(t)
            granted.add(t)

    for kind, n in ops:
        live = sorted(running | queued)
        if kind == 0:
            try:
                t, now = s.acquire(n % 10)
            except errors.QueueFullError:
                assert len(queued) == max_queue
                continue
            (running if now else queued).add(t)
            if now:
                granted.add(t)
        elif kind == 1 and running:
            t = sorted(running)[n % len(running)]
            running.discard(t)
            grant(s.release(t, ("success", "overload", "error", "ignored")[n % 4]))
        elif kind == 2 and live:
            t = live[n % len(live)]
            running.discard(t)
            queued.discard(t)
            grant(s.cancel(t))
        elif kind == 3:
            clock.advance(n / 1e6)
        elif kind == 4:
            grant(s.set_limit(1 + n % 6))
        assert (s.in_flight, s.queued) == (len(running), len(queued))
    for t in sorted(running | queued):
        grant(s.cancel(t))
        running.discard(t)
        queued.discard(t)
    assert (s.in_flight, s.queued) == (0, 0)


async def test_asyncio_driver_wakes_granted_tickets_in_priority_order() -> None:
    """The intended use: the core decides, a dict of futures waits."""
    s = fixed(2)
    waiters: dict[int, asyncio.Future[None]] = {}
    order: list[int] = []

    def wake(tickets: list[int]) -> None:
        for t in tickets:
            waiters.pop(t).set_result(None)

    async def job(priority: int) -> None:
        ticket, now = s.acquire(priority)
        if not now:
            fut = asyncio.get_running_loop().create_future()
            waiters[ticket] = fut
            try:
                await fut
            except asyncio.CancelledError:
                waiters.pop(ticket, None)
                wake(s.cancel(ticket))
                raise
        order.append(priority)
        await asyncio.sleep(0)
        wake(s.release(ticket, "success"))

    rng = random.Random(7)
    prios = [rng.randrange(10) for _ in range(30)]
    tasks = [asyncio.create_task(job(p)) for p in prios]
    victim = asyncio.create_task(job(9))
    await asyncio.sleep(0)
    victim.cancel()
    await asyncio.gather(*tasks)
    assert sorted(order) == sorted(prios)
    assert order[2:] == sorted(order[2:]), "queued jobs ran in priority order"
    assert (s.in_flight, s.queued, waiters) == (0, 0, {})
