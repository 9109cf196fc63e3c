"""Cost of the shared limiter and cache tier on a three-master Redis Cluster
against one Redis node, both on loopback.

Run: ``PYTHONPATH=python python benches/shared_cluster.py`` (needs ``redis-server``
and ``redis-cli`` on the PATH; it starts its own node and cluster on free ports and
stops them by PID). Prints, per call awaited from asyncio, ``reserve`` on one key and
on three keys of one (deployment, model), and a shared-cache ``get`` hit; then
admissions per second with 64 tasks in flight over 12 deployments (whose keys the
cluster spreads over its three masters).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from llmrelay import SharedStateConfig
from llmrelay._shared import SharedLimiter
from llmrelay._shared_tiers import SharedCacheTier
from redis_server import RedisCluster, RedisServer

N = 3000


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


async def timed(label: str, call: Callable[[], Awaitable[object]]) -> None:
    for _ in range(200):  # warm up (connect, script load)
        await call()
    samples = []
    for _ in range(N):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    p50, p99 = pct(samples, 0.5) * 1e6, pct(samples, 0.99) * 1e6
    mean = statistics.fmean(samples) * 1e6
    print(f"  {label:<34} p50 {p50:8.1f} us   p99 {p99:8.1f} us   mean {mean:8.1f} us")


async def run(label: str, sc: SharedStateConfig) -> None:
    print(label)
    lim = SharedLimiter(sc)
    big = 1e12
    scopes = [f"d{i}/m" for i in range(12)]
    for s in scopes:
        for dim in ("rpm", "tpm_in", "tpm_out"):
            lim.configure(f"{s}:{dim}", big, big)
    one = [("d0/m:rpm", 1.0)]
    three = [("d0/m:rpm", 1.0), ("d0/m:tpm_in", 500.0), ("d0/m:tpm_out", 200.0)]
    await timed("reserve, 1 key", lambda: lim.reserve(one))
    await timed("reserve, 3 keys", lambda: lim.reserve(three))
    cache = SharedCacheTier(sc)
    key = b"k" * 16
    cache.set(key, b"x" * 2000, 600.0)
    await cache.drain(5.0)
    await timed("shared cache get (hit, 2 KB)", lambda: cache.get(key))

    done = 0
    until = time.perf_counter() + 2.0

    async def hammer(i: int) -> None:
        nonlocal done
        items = [(f"{scopes[i % len(scopes)]}:rpm", 1.0)]
        while time.perf_counter() < until:
            await lim.reserve(items)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(hammer(i) for i in range(64)))
    rate = done / (time.perf_counter() - t0)
    print(f"  {'12 deployments, 64 tasks in flight':<34} {rate:8.0f} admissions/s")
    st = lim.stats()
    print(f"  script_errors={st['script_errors']} timeouts={st['timeouts']}")


async def main() -> None:
    node = RedisServer()
    cluster = RedisCluster()
    try:
        await run("one node", SharedStateConfig(url=node.url, namespace="b", op_timeout_s=0.5))
        await run(
            "three-master cluster",
            SharedStateConfig(url=cluster.url, cluster=True, namespace="b", op_timeout_s=0.5),
        )
    finally:
        cluster.stop()
        node.stop()


if __name__ == "__main__":
    asyncio.run(main())
