"""Shared limits through ``LLMService`` on a real ``redis-server`` (started per module on
a free loopback port, stopped by PID), with the fake provider in a process of its own
and workers started with ``multiprocessing`` ``spawn``.

Timing: windows are long and bounds generous; the upper bound is exact (the server's
clock decides every admission), the lower one leaves a margin for replies cut by the
end of the window on a loaded machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cluster_worker import DEPLOYMENT, Plan, Report, hammer, hold_one_request, service_config
from llmrelay import (
    CacheConfig,
    DedupConfig,
    LLMService,
    OrchestratorConfig,
    RateLimitConfig,
    SharedStateConfig,
)
from llmrelay._shared import SharedLimiter
from llmrelay.errors import ClientThrottledError, DeadlineExceededError, LLMRelayError
from llmrelay.testing import FakeProvider
from redis_server import RedisServer, free_port, needs_redis
from service_helpers import ConfigFactory

pytestmark = needs_redis

ROOT = Path(__file__).resolve().parent.parent
SPAWN = mp.get_context("spawn")


@pytest.fixture(scope="module")
def fake() -> Iterator[object]:
    with FakeProvider.spawn("openai") as f:
        yield f


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("[", "-").replace("]", "")


def run_workers(plan: Plan, n: int, window_s: float) -> list[Report]:
    """``n`` spawned workers hammering one shared limit for ``window_s``."""
    ready, out = SPAWN.Queue(), SPAWN.Queue()
    go = SPAWN.Event()
    window = SPAWN.Array("d", 2)
    procs = [
        SPAWN.Process(target=hammer, args=(plan, ready, go, window, out), daemon=True)
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        start = time.time() + 1.0  # every worker is waiting: a common start line
        window[0], window[1] = start, start + window_s
        go.set()
        reports = [out.get(timeout=window_s + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                os.kill(p.pid or 0, signal.SIGKILL)
    return reports


def test_eight_processes_share_one_limit_exactly(redis: RedisServer, fake: object, ns: str) -> None:
    # the tail (calls admitted just before the end, answered after it) loses rate x
    # latency: a low rate keeps that far inside the 1 % margin on a loaded machine
    burst, rate, window_s = 400, 10.0, 10.0
    cap = burst + rate * window_s  # C = b + r W
    plan = Plan(
        redis.url,
        fake.base_url,
        ns,
        rpm=rate * 60,
        burst=burst,
        concurrency=4,  # type: ignore[attr-defined]
    )
    reports = run_workers(plan, 8, window_s)
    admitted = sum(len(r.replies) for r in reports)
    per_process = sorted(len(r.replies) for r in reports)
    print(f"\nadmitted {admitted} of C={cap:g} across 8 processes: {per_process}")
    assert admitted <= cap, (admitted, cap, per_process)
    assert admitted >= 0.99 * cap, (admitted, cap, per_process)
    # exact: every check was Redis's, none the fallback's; the work was spread
    assert all(r.shared["degraded_episodes"] == 0 for r in reports), [r.shared for r in reports]
    assert sum(r.shared["deployments"][DEPLOYMENT]["shared_fallbacks"] for r in reports) == 0
    assert sum(1 for n in per_process if n > 0) >= 6, per_process
    assert len({r.shared["pid"] for r in reports}) == 8


def _keys(redis: RedisServer, ns: str) -> list[str]:
    return sorted(redis.resp("KEYS", f"{ns}:*"))


def test_a_process_killed_mid_request_leaves_no_permanent_reservation(
    redis: RedisServer, ns: str
) -> None:
    with FakeProvider.spawn("openai") as f:
        f.inject("hang")  # the request is on the wire when the process dies
        plan = Plan(
            redis.url,
            f.base_url,
            ns,
            rpm=60,
            burst=5,
            tokens_per_minute=100_000,
            call_timeout_s=600,
        )
        proc = SPAWN.Process(target=hold_one_request, args=(plan,), daemon=True)
        proc.start()
        try:
            deadline = time.monotonic() + 120
            while f.request_count < 1:
                assert time.monotonic() < deadline and proc.is_alive(), "the request never came"
                time.sleep(0.05)
            os.kill(proc.pid or 0, signal.SIGKILL)
        finally:
            proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    keys = _keys(redis, ns)
    scope = f"{ns}:{{{DEPLOYMENT}}}"
    reservations = [k for k in keys if k.startswith(f"{scope}:r:")]
    assert len(reservations) == 1, keys  # its booking, recorded for a reconcile that never came
    # its booking (the cells' keys, if not expired yet) is consumed capacity that
    # replenishes at the rate: 1 s of the rpm cell at 60/min, less of the tpm one;
    # the record expires with the reservation TTL. Nothing is held forever.
    for key in keys:
        ttl_ms = redis.resp("PTTL", key)
        bound = 1_001 if ":c:" in key else 600_000 if ":r:" in key else 10_000
        assert 0 < ttl_ms <= bound, (key, ttl_ms)


def _absent_config(make_config: object, policy: str) -> object:
    from llmrelay import OrchestratorConfig, RateLimitConfig, SharedStateConfig

    port = free_port()  # nothing listens there
    shared = SharedStateConfig(url=f"redis://127.0.0.1:{port}/0", on_unavailable=policy)  # type: ignore[arg-type]
    base = make_config(  # type: ignore[operator]
        provider_kw={"openai": {"rate_limit": RateLimitConfig(requests_per_minute=1, burst=10)}},
        # one shared check per call: a refusal is not retried by the service
        orchestrator=OrchestratorConfig(max_retries=0),
    )
    return msgspec.structs.replace(base, shared=shared)


@pytest.mark.parametrize("policy", ["local_share", "closed", "open"])
async def test_redis_absent_at_start_follows_the_policy(
    make_config: object,
    fakes: dict[str, FakeProvider],
    policy: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = _absent_config(make_config, policy)
    t0 = time.perf_counter()
    svc = LLMService(cfg)  # type: ignore[arg-type]
    assert time.perf_counter() - t0 < 1.0  # start-up never waits for Redis
    ok = refused = 0
    async with svc:
        with caplog.at_level(logging.WARNING, logger="llmrelay"):
            for i in range(12):
                t1 = time.perf_counter()
                try:
                    await svc.achat(f"absent {i}", model="openai/gpt-4o-mini", timeout=2.0)
                    ok += 1
                except ClientThrottledError as e:
                    refused += 1
                    if policy == "closed":
                        assert "on_unavailable='closed'" in str(e)
                # bounded by op_timeout_s (25 ms) plus the call's own work, with room
                assert time.perf_counter() - t1 < 1.0
        snap = svc.metrics.snapshot()
    shared = snap.shared
    assert shared["connected"] is False and shared["degraded"] is True
    assert shared["on_unavailable"] == policy
    if policy == "local_share":
        assert (ok, refused) == (9, 3)  # burst 10 x 0.9 / 1 live process
        # the counter: admissions the fallback decided; the gate's: every check
        assert snap.total("shared_fallbacks.local_share") == 9
        assert shared["deployments"]["openai"]["shared_fallbacks"] == 12
        warned = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warned) == 1 and "share" in warned[0], warned
    elif policy == "closed":
        assert (ok, refused) == (0, 12)
        assert fakes["openai"].request_count == 0  # refused before anything was sent
    else:
        assert (ok, refused) == (12, 0)  # open: admitted beyond the limit
        assert snap.total("shared_fallbacks.open") == 12


def test_fork_after_building_the_service(redis: RedisServer, ns: str) -> None:
    with FakeProvider.spawn("openai") as f:
        plan = Plan(redis.url, f.base_url, ns, rpm=6000, burst=100)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT / "tests")]),
        }
        done = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "shared_service_fork_child.py")],
            input=json.dumps(plan.__dict__),
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        rows = {r["who"]: r for r in map(json.loads, done.stdout.splitlines())}
        assert set(rows) == {"before", "child", "parent"}, done.stdout
        assert f.request_count == 3 * 2
    child, parent = rows["child"], rows["parent"]
    assert child["pid"] != parent["pid"] == rows["before"]["pid"]
    # the child opened its own connection and Redis decided its calls
    assert child["connected"] and child["connects"] >= 1 and child["fallback_calls"] == 0
    assert child["reservations"] >= 2 and child["member"] != parent["member"]
    assert parent["fallback_calls"] == 0 and parent["connects"] == 1
    assert child["elapsed_s"] < 30


async def test_a_429_pauses_the_deployment_in_every_process(redis: RedisServer, ns: str) -> None:
    with FakeProvider.spawn("openai") as f:
        plan = Plan(redis.url, f.base_url, ns, rpm=6000, burst=100)
        f.inject("rate_limit", times=1, retry_after=30)
        async with LLMService(service_config(plan)) as a, LLMService(service_config(plan)) as b:
            with pytest.raises(Exception, match=r"429|rate"):
                await a.achat("throttled", timeout=5.0)
            # the pause is published on the core's runtime, right after the settle
            pause_key = f"{ns}:{{{DEPLOYMENT}}}:pause"
            deadline = time.monotonic() + 10
            while (left_ms := redis.resp("PTTL", pause_key)) < 0:
                assert time.monotonic() < deadline, "the pause was never published"
                await asyncio.sleep(0.01)
            assert 25_000 < left_ms <= 30_001
            # another service (another process's worth) is held by the pause
            with pytest.raises(ClientThrottledError) as e:
                await b.achat("paused", timeout=2.0)
            assert e.value.retry_after is not None and e.value.retry_after > 20
            assert f.request_count == 1
            assert (await _stats_when(a, lambda s: s["pauses"] >= 1))["pauses"] == 1


async def _capacity_becomes(lim: SharedLimiter, key: str, want: float) -> float:
    """Poll the shared cell until its capacity is ``want`` (refunds land on the core's
    runtime just after the call that sends them); the last value seen."""
    deadline = time.monotonic() + 10
    while True:
        got, source = await lim.available(key)
        assert source == "redis"
        if abs(got - want) < 0.2 or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.01)


async def _stats_when(svc: LLMService, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll ``snapshot().shared`` until ``ready`` holds (counters of calls spawned on the
    core's runtime move just after the call returns); the last snapshot seen."""
    deadline = time.monotonic() + 10
    while True:
        stats = svc.metrics.snapshot().shared
        if ready(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.01)


async def test_nothing_sent_gives_the_shared_booking_back(
    redis: RedisServer, make_config: ConfigFactory, fakes: dict[str, FakeProvider], ns: str
) -> None:
    """Timed out while queued, cancelled while queued: each gives its Redis booking back;
    a request on the wire keeps its booking."""
    cfg = make_config(
        cache=CacheConfig(enabled=False),
        dedup=DedupConfig(enabled=False),
        orchestrator=OrchestratorConfig(max_retries=0),
        provider_kw={
            "openai": {
                "max_concurrency": 1,
                "rate_limit": RateLimitConfig(requests_per_minute=1, burst=10),
            }
        },
    )
    shared = SharedStateConfig(url=redis.url, namespace=ns, op_timeout_s=0.5)
    probe = SharedLimiter(shared)
    probe.configure("openai:rpm", 1 / 60, 10)
    fakes["openai"].inject("hang", times=1)
    async with LLMService(msgspec.structs.replace(cfg, shared=shared)) as svc:
        held = asyncio.create_task(svc.achat("holds the only slot", timeout=60))
        deadline = time.monotonic() + 30
        while fakes["openai"].request_count < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert await _capacity_becomes(probe, "openai:rpm", 9) == pytest.approx(9, abs=0.2)
        # queued behind it until its deadline: booked in Redis, then given back
        with pytest.raises(DeadlineExceededError):
            await svc.achat("times out queued", timeout=0.5)
        assert await _capacity_becomes(probe, "openai:rpm", 9) == pytest.approx(9, abs=0.2)
        # queued, then cancelled by its caller
        queued = asyncio.create_task(svc.achat("cancelled queued", timeout=60))
        while svc.metrics.snapshot().concurrency["openai"]["queued"] < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert await _capacity_becomes(probe, "openai:rpm", 8) == pytest.approx(8, abs=0.2)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert await _capacity_becomes(probe, "openai:rpm", 9) == pytest.approx(9, abs=0.2)
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        stats = await _stats_when(svc, lambda s: s["refunds"] >= 2)
    assert stats["refunds"] >= 2 and stats["reservations"] == 3
    assert fakes["openai"].request_count == 1


def _token_config(make_config: ConfigFactory, redis: RedisServer, ns: str) -> object:
    # tpm: 1 token/s with a burst of 6000 (the rpm burst's share of its minute)
    limit = RateLimitConfig(requests_per_minute=1, burst=100, tokens_per_minute=60)
    cfg = make_config(
        cache=CacheConfig(enabled=False),
        dedup=DedupConfig(enabled=False),
        orchestrator=OrchestratorConfig(max_retries=0),
        provider_kw={"openai": {"rate_limit": limit}},
    )
    shared = SharedStateConfig(url=redis.url, namespace=ns, op_timeout_s=0.5)
    return msgspec.structs.replace(cfg, shared=shared)


async def test_the_token_estimate_is_reconciled_with_the_real_usage(
    redis: RedisServer, make_config: ConfigFactory, fakes: dict[str, FakeProvider], ns: str
) -> None:
    cfg = _token_config(make_config, redis, ns)
    probe = SharedLimiter(cfg.shared)  # type: ignore[attr-defined]
    probe.configure("openai:tpm", 1.0, 6000)
    async with LLMService(cfg) as svc:  # type: ignore[arg-type]
        t0 = time.monotonic()
        r = await svc.achat("a short question", max_tokens=1000)  # estimated > 1000 tokens
        used = r.usage.total_tokens
        assert used < 200
        # before the reconcile lands the cell is short of the whole estimate (> 1000)
        deadline = t0 + 10
        while True:
            got, _ = await probe.available("openai:tpm")
            if got >= 6000 - used - 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        accrued = time.monotonic() - t0  # the cell refills at 1 token/s meanwhile
        # the counter moves when the script's reply is back, just after Redis shows it
        stats = await _stats_when(svc, lambda s: s["reconciles"] >= 1)
    # booked by the estimate, then charged only what was used
    assert 6000 - used - 1 <= got <= 6000 - used + accrued + 1, (got, used, accrued)
    assert stats["reconciles"] == 1
    assert not [k for k in _keys(redis, ns) if ":r:" in k], "the reservation's record is gone"


async def test_a_failed_attempt_drops_its_reservation_record(
    redis: RedisServer, make_config: ConfigFactory, fakes: dict[str, FakeProvider], ns: str
) -> None:
    cfg = _token_config(make_config, redis, ns)
    fakes["openai"].inject("server_error", times=1)
    async with LLMService(cfg) as svc:  # type: ignore[arg-type]
        with pytest.raises(LLMRelayError):
            await svc.achat("fails once", max_tokens=50)
        deadline = time.monotonic() + 10
        while [k for k in _keys(redis, ns) if ":r:" in k]:
            assert time.monotonic() < deadline, "the record stayed (ten minutes in Redis)"
            await asyncio.sleep(0.01)
        assert (await _stats_when(svc, lambda s: s["reconciles"] >= 1))["reconciles"] == 1


async def test_metrics_are_labelled_with_the_process_id(
    redis: RedisServer, make_config: ConfigFactory, fakes: dict[str, FakeProvider], ns: str
) -> None:
    cfg = _token_config(make_config, redis, ns)
    async with LLMService(cfg) as svc:  # type: ignore[arg-type]
        await svc.achat("counted", max_tokens=10)
        text = svc.metrics.prometheus()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples and all(f'{{pid="{os.getpid()}"' in line for line in samples), [
        line for line in samples if "pid=" not in line
    ][:5]
    assert f'llmrelay_shared_connected{{pid="{os.getpid()}"}} 1.0' in samples
    assert f'llmrelay_shared_reservations_total{{pid="{os.getpid()}"}} 1.0' in samples
    # nothing owed: Redis answered throughout
    assert f'llmrelay_shared_units_owed{{pid="{os.getpid()}"}} 0.0' in samples
    assert f'llmrelay_shared_chargebacks_total{{pid="{os.getpid()}"}} 0.0' in samples
