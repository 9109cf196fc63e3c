"""`_core.RequestDeduplicator` with followers' futures parked in the core: the leader's
complete / fail / cancel settles them through their loop's ``Completions`` queue."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llmrelay import _core, errors
from llmrelay._transport import _completions

LEADER, FOLLOWER, DONE = _core.DEDUP_LEADER, _core.DEDUP_FOLLOWER, _core.DEDUP_DONE

Fut = asyncio.Future[tuple[int, object]]


def _join(d: _core.RequestDeduplicator, key: str) -> tuple[int, int, Fut]:
    loop = asyncio.get_running_loop()
    fut: Fut = loop.create_future()
    kind, ticket, _ = d.join(key, fut, _completions(loop))
    return kind, ticket, fut


async def test_complete_sets_every_parked_future_to_the_value() -> None:
    d = _core.RequestDeduplicator()
    kind, lead, lead_fut = _join(d, "k")
    assert kind == LEADER
    followers = [_join(d, "k") for _ in range(3)]
    assert [k for k, _, _ in followers] == [FOLLOWER] * 3
    assert (d.waiting(), d.parked()) == (3, 3)
    value = {"text": "hi"}
    assert d.complete("k", lead, value) == [t for _, t, _ in followers]
    assert d.parked() == 0
    results = await asyncio.gather(*(f for _, _, f in followers))
    assert results == [(DONE, value)] * 3
    assert all(r[1] is value for r in results), "the same object, not a copy"
    assert not lead_fut.done(), "a leader's future is never parked"


async def test_permanent_failure_raises_the_leaders_error_in_every_follower() -> None:
    d = _core.RequestDeduplicator()
    _, lead, _ = _join(d, "k")
    futs = [_join(d, "k")[2] for _ in range(2)]
    boom = errors.AuthenticationError("bad key")
    none, failed = d.fail("k", lead, False, boom)
    assert (none, len(failed)) == (None, 2)
    for f in futs:
        with pytest.raises(errors.AuthenticationError) as got:
            await f
        assert got.value is boom
    assert (len(d), d.waiting(), d.parked()) == (0, 0, 0)


async def test_permanent_failure_without_an_error_is_typed() -> None:
    d = _core.RequestDeduplicator()
    _, lead, _ = _join(d, "k")
    _, _, fut = _join(d, "k")
    d.fail("k", lead, False)
    with pytest.raises(errors.LLMRelayError, match="abandoned"):
        await fut


async def test_transient_failure_promotes_the_oldest_follower() -> None:
    d = _core.RequestDeduplicator()
    _, lead, _ = _join(d, "k")
    _, f1, fut1 = _join(d, "k")
    _, f2, fut2 = _join(d, "k")
    assert d.fail("k", lead, True) == (f1, [])
    assert await fut1 == (LEADER, None)
    assert not fut2.done()
    assert d.complete("k", f1, "v") == [f2]
    assert await fut2 == (DONE, "v")


async def test_a_cancelled_follower_is_skipped_at_promotion() -> None:
    d = _core.RequestDeduplicator()
    _, lead, _ = _join(d, "k")
    _, f1, fut1 = _join(d, "k")
    _, f2, fut2 = _join(d, "k")
    fut1.cancel()  # its task has not run its handler yet
    assert d.cancel("k", lead) == f2, "the lead goes past the cancelled follower"
    assert await fut2 == (LEADER, None)
    assert d.cancel("k", f1) is None, "its late cancel changes nothing"
    assert (d.in_flight(), d.waiting(), d.parked()) == (1, 0, 0)
    assert d.complete("k", f2, "v") == []
    s = d.stats()
    assert (s["cancels"], s["promotions"], s["leaves"]) == (2, 2, 0)


async def test_cancel_hands_the_lead_on_after_a_promotion() -> None:
    """A follower cancelled just after its promotion (woken, not yet resumed) cancels as
    the leader it now is: the next follower leads."""
    d = _core.RequestDeduplicator()
    _, lead, _ = _join(d, "k")
    _, f1, fut1 = _join(d, "k")
    _, f2, fut2 = _join(d, "k")
    assert d.cancel("k", lead) == f1
    assert d.cancel("k", f1) == f2
    assert await fut2 == (LEADER, None)
    await asyncio.sleep(0)
    assert fut1.done()
    assert d.cancel("k", f2) is None
    assert (len(d), d.in_flight(), d.waiting()) == (0, 0, 0)


async def test_follower_cancel_drops_its_future_and_is_idempotent() -> None:
    d = _core.RequestDeduplicator()
    _, lead, _ = _join(d, "k")
    _, f1, fut1 = _join(d, "k")
    assert d.cancel("k", f1) is None
    assert d.cancel("k", f1) is None
    assert d.cancel("k", -1) is None and d.cancel("nope", f1) is None
    assert (d.waiting(), d.parked()) == (0, 0)
    assert d.complete("k", lead, "v") == []
    await asyncio.sleep(0)
    assert not fut1.done(), "a follower that left is never woken"


async def test_window_hit_and_leader_do_not_park() -> None:
    d = _core.RequestDeduplicator(window_s=10.0)
    _, lead, fut = _join(d, "k")
    d.complete("k", lead, "v")
    loop = asyncio.get_running_loop()
    fut2: Fut = loop.create_future()
    assert d.join("k", fut2, _completions(loop)) == (DONE, 0, "v")
    assert d.parked() == 0
    await asyncio.sleep(0)
    assert not fut.done() and not fut2.done()


async def test_a_future_needs_its_completions() -> None:
    d = _core.RequestDeduplicator()
    fut: Fut = asyncio.get_running_loop().create_future()
    with pytest.raises(errors.InvalidRequestError, match="Completions") as e:
        d.join("k", fut)
    assert e.value.field == "completions"
    assert len(d) == 0


async def test_a_leader_on_another_thread_wakes_this_loops_followers() -> None:
    d = _core.RequestDeduplicator()
    _, lead, _ = _join(d, "k")
    futs = [_join(d, "k")[2] for _ in range(5)]
    done = threading.Event()

    def other_thread() -> None:
        d.complete("k", lead, "from a thread")
        done.set()

    threading.Thread(target=other_thread).start()
    assert await asyncio.wait_for(asyncio.gather(*futs), 5) == [(DONE, "from a thread")] * 5
    assert done.is_set()


def test_bad_error_is_a_type_error() -> None:
    d = _core.RequestDeduplicator()
    _, lead, _ = d.join("k")
    with pytest.raises(TypeError):
        d.fail("k", lead, False, "not an exception")  # type: ignore[arg-type]
