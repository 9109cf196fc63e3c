"""`_core.RequestDeduplicator`: lead / follow / window, promotion, capacity, nobody hangs."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrelay import _core, errors

LEADER, FOLLOWER, DONE = _core.DEDUP_LEADER, _core.DEDUP_FOLLOWER, _core.DEDUP_DONE


def test_constants() -> None:
    assert (LEADER, FOLLOWER, DONE) == (0, 1, 2)


def test_leader_followers_complete() -> None:
    d = _core.RequestDeduplicator()
    kind, lead, value = d.join("abc")
    assert (kind, value) == (LEADER, None)
    f1 = d.join("abc")
    f2 = d.join("abc")
    assert (f1[0], f2[0]) == (FOLLOWER, FOLLOWER)
    assert len({lead, f1[1], f2[1]}) == 3
    assert (d.in_flight(), d.waiting(), len(d)) == (1, 2, 1)
    result = {"text": "hi"}
    assert d.complete("abc", lead, result) == [f1[1], f2[1]]
    assert (d.in_flight(), d.waiting(), len(d)) == (0, 0, 0)
    assert d.join("abc")[0] == LEADER, "no window: a later call leads again"
    s = d.stats()
    assert (s["joins_leader"], s["joins_follower"], s["completions"]) == (2, 2, 1)


def test_window_returns_the_same_object_until_expiry() -> None:
    clock = _core.ManualClock()
    d = _core.RequestDeduplicator(window_s=2.0, clock=clock)
    _, lead, _ = d.join("k")
    result = object()
    d.complete("k", lead, result)
    kind, ticket, value = d.join("k")
    assert (kind, ticket) == (DONE, 0) and value is result
    clock.advance(1.5)
    assert d.join("k")[2] is result
    assert d.sweep() == 0
    clock.advance(0.5)
    assert d.sweep() == 1
    assert len(d) == 0
    assert d.join("k")[0] == LEADER
    assert d.stats()["hits_window"] == 2


def test_lazy_expiry_on_access() -> None:
    clock = _core.ManualClock()
    d = _core.RequestDeduplicator(window_s=1.0, clock=clock)
    _, lead, _ = d.join("k")
    d.complete("k", lead, 1)
    clock.advance(1.0)
    assert d.join("k")[0] == LEADER
    assert d.stats()["expirations"] == 1


def test_transient_failure_promotes_oldest_follower() -> None:
    d = _core.RequestDeduplicator()
    _, lead, _ = d.join("k")
    f1 = d.join("k")[1]
    f2 = d.join("k")[1]
    assert d.fail("k", lead, True) == (f1, [])
    assert d.waiting() == 1
    with pytest.raises(errors.InvalidRequestError, match=f"ticket {lead}"):
        d.complete("k", lead, "late")
    assert d.complete("k", f1, "ok") == [f2]
    _, lead, _ = d.join("k")
    assert d.fail("k", lead, True) == (None, [])
    assert len(d) == 0
    assert d.stats()["promotions"] == 1


def test_permanent_failure_fails_every_follower() -> None:
    d = _core.RequestDeduplicator(window_s=10.0)
    _, lead, _ = d.join("k")
    followers = [d.join("k")[1] for _ in range(3)]
    assert d.fail("k", lead, False) == (None, followers)
    assert (len(d), d.waiting(), d.in_flight()) == (0, 0, 0)
    assert d.join("k")[0] == LEADER, "failures are never windowed"


def test_leave_is_idempotent_and_refuses_the_leader() -> None:
    d = _core.RequestDeduplicator()
    _, lead, _ = d.join("k")
    f1 = d.join("k")[1]
    f2 = d.join("k")[1]
    d.leave("k", f1)
    d.leave("k", f1)
    d.leave("missing", 5)
    d.leave("k", -1)
    assert d.waiting() == 1
    with pytest.raises(errors.InvalidRequestError, match="ticket"):
        d.leave("k", lead)
    assert d.complete("k", lead, None) == [f2]


def test_wrong_ticket_or_key_raises_and_changes_nothing() -> None:
    d = _core.RequestDeduplicator()
    _, lead, _ = d.join("k")
    _, follower, _ = d.join("k")
    for key, ticket in (("k", follower), ("k", 999), ("other", lead)):
        with pytest.raises(errors.InvalidRequestError, match="not the leader"):
            d.complete(key, ticket, 1)
        with pytest.raises(errors.InvalidRequestError, match="ticket"):
            d.fail(key, ticket, False)
    assert (d.in_flight(), d.waiting()) == (1, 1)
    assert d.complete("k", lead, 1) == [follower]


def test_capacity_evicts_oldest_completed_and_untracks_when_full_of_in_flight() -> None:
    d = _core.RequestDeduplicator(window_s=60.0, max_entries=2)
    _, a, _ = d.join("a")
    d.complete("a", a, "A")
    _, b, _ = d.join("b")
    _, c, _ = d.join("c")  # evicts completed "a"
    assert len(d) == 2 and d.stats()["evictions"] == 1
    kind, u, _ = d.join("d")  # only in-flight entries: runs untracked
    assert kind == LEADER and d.stats()["untracked"] == 1
    assert d.join("d")[0] == LEADER, "nobody can follow an untracked leader"
    assert d.complete("d", u, "D") == []
    assert d.fail("d", u, False) == (None, [])
    assert d.complete("b", b, "B") == []
    assert d.complete("c", c, "C") == []
    assert d.join("b") == (DONE, 0, "B")
    assert len(d) == 2


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"window_s": -1.0}, "window_s=-1"),
        ({"window_s": float("nan")}, "window_s=NaN"),
        ({"window_s": float("inf")}, "window_s=inf"),
        ({"max_entries": 0}, "max_entries=0"),
        ({"max_entries": -5}, "max_entries=-5"),
    ],
)
def test_config_errors_name_param_and_value(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(errors.ConfigError, match=needle):
        _core.RequestDeduplicator(**kwargs)  # type: ignore[arg-type]


def test_repr_and_stats_keys() -> None:
    d = _core.RequestDeduplicator()
    assert repr(d) == "RequestDeduplicator(in_flight=0, waiting=0, len=0)"
    assert {"joins_leader", "joins_follower", "hits_window", "promotions", "failures"} <= set(
        d.stats()
    )


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.booleans()), max_size=150))
def test_random_sequences_never_leave_a_follower_hanging(
    ops: list[tuple[int, int, bool]],
) -> None:
    clock = _core.ManualClock()
    d = _core.RequestDeduplicator(window_s=1.0, max_entries=3, clock=clock)
    leaders: dict[str, int] = {}
    followers: dict[str, list[int]] = {}
    issued: set[int] = set()
    resolved: list[int] = []
    for kind, k, flag in ops:
        key = f"k{k}"
        lead = leaders.get(key)
        if kind in (0, 1):
            code, t, _ = d.join(key)
            if code == FOLLOWER:
                assert lead is not None
                followers.setdefault(key, []).append(t)
                issued.add(t)
            elif code == LEADER:
                assert lead is None
                if t < 2**62:  # not an untracked leader
                    leaders[key] = t
        elif kind == 2 and lead is not None:
            del leaders[key]
            woken = d.complete(key, lead, k)
            assert woken == followers.pop(key, [])
            resolved += woken
        elif kind == 3 and lead is not None:
            del leaders[key]
            nxt, failed = d.fail(key, lead, flag)
            waiting = followers.pop(key, [])
            if flag and waiting:
                assert (nxt, failed) == (waiting[0], [])
                leaders[key] = waiting[0]
                resolved.append(waiting[0])
                if waiting[1:]:
                    followers[key] = waiting[1:]
            else:
                assert (nxt, failed) == (None, waiting)
                resolved += failed
        elif kind == 4 and followers.get(key):
            t = followers[key].pop(-1 if flag else 0)
            d.leave(key, t)
            d.leave(key, t)
            resolved.append(t)
        elif kind == 5:
            clock.advance(0.4 if flag else 0.0)
            d.sweep()
        assert d.waiting() == sum(len(v) for v in followers.values())
        assert d.in_flight() == len(leaders)
        assert len(d) <= 3
    for key, lead in leaders.items():
        woken = d.complete(key, lead, 0)
        assert woken == followers.pop(key, [])
        resolved += woken
    assert len(resolved) == len(set(resolved)), "a ticket was resolved twice"
    assert issued <= set(resolved), "a follower was left hanging"
    assert (d.in_flight(), d.waiting()) == (0, 0)
    clock.advance(5.0)
    d.sweep()
    assert len(d) == 0


async def test_asyncio_driver_shares_one_call() -> None:
    """The intended use: one provider call, every joined caller gets its value."""
    d = _core.RequestDeduplicator()
    waiters: dict[int, asyncio.Future[object]] = {}
    calls = 0

    async def fetch(key: str) -> object:
        nonlocal calls
        kind, ticket, value = d.join(key)
        if kind == DONE:
            return value
        if kind == FOLLOWER:
            fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            waiters[ticket] = fut
            return await fut
        calls += 1
        await asyncio.sleep(0)
        result = f"answer:{key}"
        for t in d.complete(key, ticket, result):
            waiters.pop(t).set_result(result)
        return result

    results = await asyncio.gather(*(fetch("same") for _ in range(20)))
    assert results == ["answer:same"] * 20
    assert calls == 1 and waiters == {}
