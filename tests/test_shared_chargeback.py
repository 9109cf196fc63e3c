"""Charge-back of the ``local_share`` fallback on a real ``redis-server``: what a
process admitted from its local share while Redis was away is charged into the
cluster-wide cells on recovery (capped at one burst of debt, once per batch), and
Redis killed with SIGKILL and restarted on the same port is picked up again with
the episode's admissions bounded by the limit plus one burst."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from llmrelay import SharedStateConfig
from llmrelay._shared import SharedLimiter
from redis_server import RedisCluster, RedisServer, needs_redis

pytestmark = needs_redis

ROOT = Path(__file__).resolve().parent.parent


def limiter(url: str, ns: str, **kw: object) -> SharedLimiter:
    kw.setdefault("op_timeout_s", 0.5)
    return SharedLimiter(SharedStateConfig(url=url, namespace=ns, **kw))  # type: ignore[arg-type]


def charge_script() -> str:
    """The ``CHARGE`` script's Lua, as the core sends it (read from its source)."""
    src = (ROOT / "rust" / "shared" / "scripts.rs").read_text()
    found = re.search(r'pub const CHARGE: &str = r#"(.*?)"#;', src, re.DOTALL)
    assert found is not None, "CHARGE not found in rust/shared/scripts.rs"
    return found.group(1)


async def test_charge_script_caps_the_debt_and_applies_a_batch_once(redis: RedisServer) -> None:
    ns = "cb-script"
    lim = limiter(redis.url, ns)
    lim.configure("d/m:rpm", 0.001, 10)  # ~no refill during the test
    cell = f"{ns}:{{d/m}}:c:rpm"
    interval = f"{1e6 / 0.001:.6f}"
    script = charge_script()

    def charge(batch: str, units: float) -> list[object]:
        marker = f"{ns}:{{d/m}}:cb:{batch}"
        reply = redis.resp("EVAL", script, 2, cell, marker, 1, 60_000, interval, 10, units)
        assert isinstance(reply, list)
        return reply

    assert charge("b1", 4) == [1, "4.000000"]
    assert (await lim.available("d/m:rpm"))[0] == pytest.approx(6, abs=0.01)
    # The same batch again (a retry whose first reply was lost): not charged twice.
    assert charge("b1", 4) == [0]
    assert (await lim.available("d/m:rpm"))[0] == pytest.approx(6, abs=0.01)
    # A charge never refuses, but leaves the cell at most one burst in debt:
    # 4 + 100 asked, 20 (two bursts: the full one and one of debt) taken in all.
    reply = charge("b2", 100)
    assert reply[0] == 1 and float(str(reply[1])) == pytest.approx(16, abs=0.01)
    assert (await lim.available("d/m:rpm"))[0] == 0
    refused = await lim.reserve([("d/m:rpm", 1)])
    assert not refused.admitted and refused.source == "redis"
    # tat is now + 20 intervals: a call of 1 goes after 11 intervals
    assert refused.wait_s == pytest.approx(11 / 0.001, rel=1e-3)
    # More debt moves nothing; the marker expires like a reservation record.
    more = charge("b3", 5)  # only what refilled since (microseconds' worth)
    assert more[0] == 1 and float(str(more[1])) == pytest.approx(0, abs=0.01)
    assert 0 < int(redis.resp("PTTL", f"{ns}:{{d/m}}:cb:b1")) <= 60_000


async def test_local_share_usage_is_charged_back_after_a_sigstop(redis: RedisServer) -> None:
    """The same machinery without a restart: the cell in Redis survives the outage,
    so what the local share admitted comes on top of what Redis had booked."""
    server = RedisServer()
    key = "d/m:tpm_in"
    try:
        lim = limiter(server.url, "cb-stop", op_timeout_s=0.025)
        lim.configure(key, 0.001, 1000)
        assert (await lim.reserve([(key, 100)])).source == "redis"
        server.pause()
        try:
            local = [await lim.reserve([(key, 50)]) for _ in range(4)]
            await lim.refund([(key, 30)])  # a local booking given back: owed less
        finally:
            server.resume()
        assert all(a.admitted and a.source == "local_share" for a in local)
        assert lim.stats()["units_owed"] == pytest.approx(170)
        for _ in range(500):  # the first Redis reply starts the charge in the background
            if (await lim.available(key))[1] == "redis" and lim.stats()["chargebacks"]:
                break
            await asyncio.sleep(0.01)
        stats = lim.stats()
        assert stats["chargebacks"] == 1 and stats["units_charged_back"] == pytest.approx(170)
        assert stats["units_owed"] == 0 and stats["chargeback_failures"] == 0
        # The cell holds the charge-back on top of Redis's own booking. The calls cut by
        # the timeout were queued on the stalled server, which may run them when it
        # wakes (the 4 reservations of 50, and the refund of 30): the charge-back then
        # counts those twice, on the safe side (bounded by the one-burst debt cap).
        avail = (await lim.available(key))[0]
        assert 1000 - 100 - 170 - 200 - 0.05 <= avail <= 1000 - 100 - 170 + 30 + 0.05
        # Nothing owed any more: a further reply charges nothing.
        await lim.available(key)
        await asyncio.sleep(0.05)
        assert lim.stats()["chargebacks"] == 1
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["exact", "leased"])
async def test_redis_killed_and_restarted_on_the_same_port(mode: str) -> None:
    op_timeout = 0.025
    rate, burst, outage_s = 0.5, 40.0, 1.5
    key = "d/m:rpm"
    server = RedisServer()
    port = server.port
    lim = limiter(server.url, f"kill-{mode}", op_timeout_s=op_timeout, mode=mode)
    lim.configure(key, rate, burst)
    restarted: RedisServer | None = None
    started = time.monotonic()
    try:
        # Before: Redis decides; the burst is taken.
        before = 0
        for _ in range(int(burst) + 5):
            a = await lim.reserve([(key, 1)])
            before += a.admitted
            assert a.source in ("redis", "lease")
        assert burst <= before <= burst + 2

        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        server.stop()  # the process is gone: only its directory is left to clean

        # Outage: the local share answers, each call within the op timeout + a little.
        outage, local, slowest = 0, 0, 0.0
        until = time.monotonic() + outage_s
        for _ in range(10_000):
            if time.monotonic() >= until:
                break
            t0 = time.perf_counter()
            a = await lim.reserve([(key, 1)])
            slowest = max(slowest, time.perf_counter() - t0)
            outage += a.admitted
            if a.source == "local_share":
                local += a.admitted
            else:
                assert a.source == "lease"  # a slice leased before the kill
            await asyncio.sleep(0.002)
        print(
            f"outage ({mode}): {outage} admitted, {local} by the local share, "
            f"slowest call {slowest * 1e3:.1f} ms"
        )
        assert slowest < op_timeout + 0.25  # generous: what it catches is a call waiting
        assert local == pytest.approx(burst * 0.9, abs=2)
        assert lim.stats()["units_owed"] == pytest.approx(local)

        # Restart on the same port: the limiter reconnects by itself.
        restarted = RedisServer(port)
        t_restart = time.monotonic()
        for _ in range(1_000):
            if (await lim.available(key))[1] == "redis":
                break
            assert time.monotonic() - t_restart < 5.0, "no reconnect within 5 s"
            await asyncio.sleep(0.005)
        reconnect_s = time.monotonic() - t_restart
        print(f"reconnect after the restart ({mode}): {reconnect_s * 1e3:.0f} ms")
        assert reconnect_s < 1.5  # the issue: within 1 s (+ slack for a loaded machine)

        # The charge-back runs in the background after the first reply.
        for _ in range(500):
            if lim.stats()["chargebacks"]:
                break
            await asyncio.sleep(0.01)
        stats = lim.stats()
        assert stats["chargebacks"] == 1, stats
        assert stats["units_charged_back"] == pytest.approx(local)
        assert stats["units_owed"] == 0
        # The restarted server started empty: its cell now holds the local usage.
        avail, source = await lim.available(key)
        since = time.monotonic() - t_restart
        assert source == "redis"
        assert burst - local - 0.05 <= avail <= burst - local + rate * since + 0.05

        # After: Redis decides on what is left.
        after = 0
        for _ in range(int(burst) + 5):
            a = await lim.reserve([(key, 1)])
            after += a.admitted
        total = before + outage + after
        capacity = burst + rate * (time.monotonic() - started)
        print(
            f"episode ({mode}): {before} + {outage} + {after} = {total} admitted; "
            f"capacity {capacity:.1f}, bound {capacity + burst:.1f}"
        )
        assert total <= capacity + burst
        assert after <= burst - local + rate * (time.monotonic() - t_restart) + 1
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()


async def test_on_a_cluster_a_dead_masters_debt_waits_for_its_own_shard() -> None:
    """A charge starts with a reply for its own (deployment, model): replies from the
    live masters do not send the dead one's batch (it would only fail)."""
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli not installed (.ci/run installs redis-server)")
    cluster = RedisCluster(extra_args=("--cluster-require-full-coverage", "no"))
    try:
        cfg = SharedStateConfig(url=cluster.url, cluster=True, namespace="cb-cl", op_timeout_s=0.5)
        lim = SharedLimiter(cfg)
        scopes = [f"dep{i}/m" for i in range(12)]
        for s in scopes:
            lim.configure(f"{s}:rpm", 0.01, 100)
            assert (await lim.reserve([(f"{s}:rpm", 1.0)])).source == "redis"
        owner = {
            s: port
            for port in cluster.ports
            for s in scopes
            if any(f"{{{s}}}" in k for k in cluster.keys(port, "cb-cl:{*"))
        }
        assert len(owner) == len(scopes)
        dead = next(p for p in cluster.ports if p in owner.values())
        i = cluster.ports.index(dead)
        cluster.procs[i].terminate()
        cluster.procs[i].wait(30)
        on_dead = [s for s in scopes if owner[s] == dead]
        for s in on_dead:
            assert (await lim.reserve([(f"{s}:rpm", 1.0)])).source == "local_share"
        for _ in range(2):
            for s in scopes:
                if owner[s] != dead:
                    assert (await lim.reserve([(f"{s}:rpm", 1.0)])).source == "redis"
        await asyncio.sleep(0.1)  # a charge would have been spawned by now
        stats = lim.stats()
        assert stats["units_owed"] == len(on_dead), stats
        assert stats["chargebacks"] == 0 and stats["chargeback_failures"] == 0, stats
    finally:
        cluster.stop()
