"""The shared cache tier and cross-process dedup on a real ``redis-server``
(started per module on a free loopback port, stopped by PID), with worker
processes started by multiprocessing's ``spawn`` and the fake provider in a
process of its own (it counts the calls it gets).

Timing: every wait has a wide margin (a loaded 2-core machine); nothing
asserts a speed.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from llmrelay import LLMService, SharedStateConfig
from llmrelay.errors import AuthenticationError, ConfigError, DeadlineExceededError
from llmrelay.testing import FakeProvider
from redis_server import RedisServer, free_port, needs_redis
from shared_tier_worker import QUESTION_KW, ask, service_config

pytestmark = needs_redis

SPAWN = multiprocessing.get_context("spawn")
WAIT_S = 90.0  # the longest any step may take before the test fails


@pytest.fixture(scope="module")
def fake_proc() -> Iterator[Any]:
    with FakeProvider.spawn("openai") as fake:
        yield fake


@pytest.fixture
def fake(fake_proc: Any) -> Any:
    fake_proc.reset()
    fake_proc.latency_s = 0.0
    return fake_proc


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    """A namespace of this test's own (tests share the server, not keys)."""
    return "t-" + request.node.name.replace("[", "-").replace("]", "")


def cfg(redis: RedisServer, ns: str, fake: Any, **kw: Any) -> dict[str, Any]:
    return {"redis_url": redis.url, "namespace": ns, "base_url": fake.base_url, **kw}


def get(q: Any, what: str) -> dict[str, Any]:
    """The next message on ``q`` that has ``what``, skipping others."""
    end = time.monotonic() + WAIT_S
    while True:
        try:
            msg: dict[str, Any] = q.get(timeout=max(0.1, end - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {what!r} from a worker within {WAIT_S}s") from None
        if what in msg:
            return msg


def run(target: Any, *args: Any) -> Any:
    p = SPAWN.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def reap(*procs: Any) -> None:
    for p in procs:
        p.join(WAIT_S)
        if p.is_alive():
            p.kill()
            p.join()


def wait_until(cond: Any, what: str) -> None:
    end = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


# ---- the shared cache tier -------------------------------------------------------------------


def test_a_reply_cached_by_process_a_is_a_hit_in_process_b(
    redis: RedisServer, ns: str, fake: Any
) -> None:
    q = SPAWN.Queue()
    a = run(ask, cfg(redis, ns, fake), "What is the capital of France?", q)
    first = get(q, "text")
    reap(a)
    assert first["cached"] is False and fake.request_count == 1
    assert first["counters"].get("cache_misses.shared") == 1
    b = run(ask, cfg(redis, ns, fake), "What is the capital of France?", q)
    second = get(q, "text")
    reap(b)
    assert second["pid"] != first["pid"]
    assert second["cached"] is True and second["text"] == first["text"]
    assert fake.request_count == 1  # B never called the provider
    assert second["counters"].get("cache_hits.shared") == 1
    assert second["cache"]["shared_hits"] == 1
    # Only hashed keys in Redis: no prompt, no API key.
    keys = redis.resp("KEYS", f"{ns}:*")  # the cache entry (and dedup's short-lived result)
    shape = re.compile(re.escape(ns) + r":(c:|\{d:)[0-9a-f]{32}(\}:r)?")
    assert keys and all(shape.fullmatch(k) for k in keys), keys


def _one_key(redis: RedisServer, ns: str) -> str:
    keys = redis.resp("KEYS", f"{ns}:c:*")
    assert len(keys) == 1, keys
    return str(keys[0])


async def test_a_corrupt_or_foreign_entry_is_a_counted_miss(
    redis: RedisServer, ns: str, fake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = service_config(redis.url, ns, fake.base_url)
    async with LLMService(config) as svc:
        await svc.achat("Name a prime.", **QUESTION_KW)
    key = _one_key(redis, ns)  # written by then: close drains queued writes
    assert redis.resp("PTTL", key) > 0  # every entry expires
    redis.resp("SETRANGE", key, 40, "garbage")
    async with LLMService(config) as svc:
        r = await svc.achat("Name a prime.", **QUESTION_KW)
        assert r.cached is False and fake.request_count == 2
        stats = svc.metrics.snapshot().cache
        assert (stats["shared_corrupt"], stats["shared_hits"]) == (1, 0)
    redis.resp("SET", key, '{"text": "not ours"}')
    async with LLMService(config) as svc:
        r = await svc.achat("Name a prime.", **QUESTION_KW)
        assert r.cached is False and fake.request_count == 3
        assert svc.metrics.snapshot().cache["shared_foreign"] == 1
    # the reply written again is a hit once more
    async with LLMService(config) as svc:
        assert (await svc.achat("Name a prime.", **QUESTION_KW)).cached is True
        assert fake.request_count == 3


async def test_a_shared_hit_fills_memory_and_honours_the_controls(
    redis: RedisServer, ns: str, fake: Any
) -> None:
    from llmrelay import CacheControl

    config = service_config(redis.url, ns, fake.base_url)
    async with LLMService(config) as svc:
        await svc.achat("Count to three.", **QUESTION_KW)
    async with LLMService(config) as svc:
        assert (await svc.achat("Count to three.", **QUESTION_KW)).cached
        assert (await svc.achat("Count to three.", **QUESTION_KW)).cached
        snap = svc.metrics.snapshot()
        assert snap.total("cache_hits.shared") == 1 and snap.total("cache_hits.memory") == 1
        # refresh skips every tier (and calls the provider); write_only reads none
        r = await svc.achat("Count to three.", cache=CacheControl(refresh=True), **QUESTION_KW)
        assert r.cached is False and fake.request_count == 2
    async with LLMService(config) as svc:
        r = await svc.achat("Count to three.", cache=CacheControl(mode="write_only"), **QUESTION_KW)
        assert r.cached is False and fake.request_count == 3
        # a streamed call is answered from the shared tier as a replayed stream
    async with LLMService(config) as svc:
        chunks = [c async for c in svc.astream("Count to three.", **QUESTION_KW)]
        assert "".join(c.text for c in chunks) and fake.request_count == 3
        assert svc.metrics.snapshot().total("cache_hits.shared") == 1


def test_a_second_process_on_the_same_disk_path_is_served_by_the_shared_tier(
    redis: RedisServer, ns: str, fake: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = str(tmp_path / "cache")
    q, hold = SPAWN.Queue(), SPAWN.Event()
    a = run(ask, cfg(redis, ns, fake, disk_path=disk), "Why is the sky blue?", q, None, hold)
    try:
        first = get(q, "text")
        assert first["disk_tier"]["enabled"] is True
        # A holds the disk tier (sled locks it); this process opens the same path.
        config = service_config(redis.url, ns, fake.base_url, disk_path=disk)
        with caplog.at_level(logging.WARNING, logger="llmrelay"):
            svc = LLMService(config)
        try:
            warned = [r.getMessage() for r in caplog.records if "disk cache" in r.getMessage()]
            assert warned and "shared tier" in warned[0]
            wait_until(lambda: redis.resp("KEYS", f"{ns}:c:*"), "A's shared write")
            r = svc.chat("Why is the sky blue?", **QUESTION_KW)
            assert r.cached is True and fake.request_count == 1
            snap = svc.metrics.snapshot()
            assert snap.cache["disk_off_shared_serves"] == 1
            assert snap.disk_tier["enabled"] is False
            assert snap.disk_tier["served_by"] == "memory+shared"
            assert snap.total("cache_hits.shared") == 1
        finally:
            svc.close()
    finally:
        hold.set()
        reap(a)


# ---- cross-process dedup ---------------------------------------------------------------------


def test_n_processes_asking_at_once_cause_one_provider_call(
    redis: RedisServer, ns: str, fake: Any
) -> None:
    fake.latency_s = 2.0  # the leader's call outlasts every other process's join
    q, go = SPAWN.Queue(), SPAWN.Event()
    workers = [
        run(ask, cfg(redis, ns, fake, cache=False), "Tell me a fact.", q, go) for _ in range(4)
    ]
    try:
        for _ in workers:
            get(q, "ready")
        go.set()
        answers = [get(q, "text") for _ in workers]
    finally:
        go.set()
        reap(*workers)
    assert fake.request_count == 1
    assert len({a["text"] for a in answers}) == 1
    assert sum(a["dedup"]["shared_leads"] for a in answers) == 1
    assert sum(a["dedup"]["shared_joins"] for a in answers) == 3
    assert sum(a["counters"].get("dedup_shared_joins", 0) for a in answers) == 3
    assert len({a["pid"] for a in answers}) == 4


def test_a_leader_killed_mid_call_is_taken_over(redis: RedisServer, ns: str, fake: Any) -> None:
    fake.latency_s = 600.0  # the leader's call stays at the provider until it is killed
    q = SPAWN.Queue()
    config = cfg(redis, ns, fake, cache=False, lease_s=1.0)
    leader = run(ask, config, "Explain leases.", q)
    follower = None
    try:
        wait_until(lambda: fake.request_count == 1, "the leader's call at the provider")
        follower = run(ask, config, "Explain leases.", q)
        # the follower found the lease held: it marks the request as waited on
        wait_until(lambda: redis.resp("KEYS", f"{ns}:*:w"), "the follower to wait")
        fake.latency_s = 0.0  # the follower's own call (after the takeover) is answered
        os.kill(leader.pid, signal.SIGKILL)
        leader.join(WAIT_S)
        answer = get(q, "text")
    finally:
        reap(*(p for p in (leader, follower) if p is not None))
    assert follower is not None and answer["pid"] == follower.pid
    assert answer["dedup"]["shared_takeovers"] == 1
    assert fake.request_count == 2  # the dead leader's call, and the follower's own


async def test_a_leader_that_fails_hands_over_at_once(
    redis: RedisServer, ns: str, fake: Any
) -> None:
    config = service_config(redis.url, ns, fake.base_url, cache=False, lease_s=30.0)
    fake.inject("auth", times=1)  # the first call fails for good (401)
    async with LLMService(config) as a, LLMService(config) as b:
        fake.latency_s = 1.0
        first = asyncio.create_task(a.achat("Fail once.", **QUESTION_KW))
        await asyncio.sleep(0.3)  # a's call is at the provider (latency 1 s)
        second = asyncio.create_task(b.achat("Fail once.", timeout=20, **QUESTION_KW))
        with pytest.raises(AuthenticationError):
            await first
        started = time.monotonic()
        r = await second
        # taken over when the leader gave up, not when its 30 s lease ran out
        assert time.monotonic() - started < 15
        assert r.text and fake.request_count == 2


async def test_a_waiter_is_bounded_by_its_deadline(redis: RedisServer, ns: str, fake: Any) -> None:
    # two services in one process have two local dedup maps: two processes' worth
    config = service_config(redis.url, ns, fake.base_url, cache=False, lease_s=30.0)
    fake.latency_s = 6.0
    async with LLMService(config) as a, LLMService(config) as b:
        first = asyncio.create_task(a.achat("Slow one.", **QUESTION_KW))
        end = time.monotonic() + WAIT_S
        while fake.request_count == 0:
            assert time.monotonic() < end
            await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await b.achat("Slow one.", timeout=1.0, **QUESTION_KW)
        assert 0.9 < time.monotonic() - started < 5.5  # its deadline, not the leader's call
        assert (await first).text
        assert b.metrics.snapshot().dedup["shared_timeouts"] == 1
    assert fake.request_count == 1


# ---- Redis absent or killed ------------------------------------------------------------------


async def test_redis_absent_calls_still_answer(ns: str, fake: Any) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    config = service_config(url, ns, fake.base_url)
    async with LLMService(config) as svc:
        started = time.monotonic()
        r1 = await svc.achat("Is Redis there?", **QUESTION_KW)
        r2 = await svc.achat("Is Redis there?", **QUESTION_KW)
        assert time.monotonic() - started < 20
        assert r1.text and r2.cached  # the memory tier still serves
        snap = svc.metrics.snapshot()
        assert snap.cache["shared_hits"] == 0 and snap.cache["shared_errors"] >= 1
        assert snap.dedup["shared_unavailable"] >= 1
    assert fake.request_count == 1


async def test_redis_killed_mid_run_calls_still_answer(ns: str, fake: Any) -> None:
    server = RedisServer()
    try:
        config = service_config(server.url, ns, fake.base_url)
        async with LLMService(config) as svc:
            assert (await svc.achat("Before the crash.", **QUESTION_KW)).text
            server.stop()
            for i in range(3):
                r = await svc.achat(f"After the crash {i}.", **QUESTION_KW)
                assert r.text and not r.cached
            assert fake.request_count == 4
            snap = svc.metrics.snapshot()
            assert snap.dedup["shared_unavailable"] >= 3
    finally:
        server.stop()


def test_config_rejects_a_bad_lease() -> None:
    with pytest.raises(ConfigError) as e:
        SharedStateConfig(url="redis://127.0.0.1:1", dedup_lease_s=0.0)
    assert e.value.field == "dedup_lease_s"
    cfg = msgspec.json.decode(msgspec.json.encode(SharedStateConfig(url="redis://h")))
    assert cfg["dedup_lease_s"] == 3.0
