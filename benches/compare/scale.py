"""llmrelay's scale curves: overhead vs concurrency, cache size and deployments; and the
precision of its rate limiter at saturation."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from typing import Any

from clients import MESSAGES, BareAsyncio, Client, LLMRelay, llmrelay_config
from harness import Counts, burst, concurrent, server_requests, summary, timed_loop


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def vs_concurrency(
    clients: list[Client], c: Counts, log: Callable[[str], None]
) -> dict[str, Any]:
    """Throughput, latency and CPU per request from 1 to 1,024 in flight."""
    picked = [
        k
        for k in clients
        if k.name == "bare asyncio" or (k.name.startswith("llmrelay") and "httpx" not in k.name)
    ]
    return await concurrent(picked, Counts(**{**c.__dict__, "reps": 1}), c.scale_conc, log)


async def vs_cache_size(url: str, c: Counts, log: Callable[[str], None]) -> dict[str, Any]:
    """Memory-hit latency as the memory tier fills (filler entries of 200 bytes)."""
    from llmrelay import CacheConfig, LLMService

    top = max(c.scale_cache)
    cfg = llmrelay_config(url, cache=CacheConfig(memory_max_entries=top + 1000))
    out: dict[str, Any] = {}
    rng = random.Random(7)
    value = bytes(200)
    async with LLMService(cfg) as svc:
        cache = svc._engine.cache  # the service's own HybridCache (a benchmark may look inside)
        await svc.achat(MESSAGES, temperature=0)  # the hot entry, from the server
        filled = 0
        for size in c.scale_cache:
            while filled < size:
                cache.set(filled.to_bytes(8, "little") + b"\xff" * 8, value)
                filled += 1
            hot = await timed_loop(lambda: svc.achat(MESSAGES, temperature=0), c.cache_n, c.block_s)
            # raw lookups of random filler keys: the memory walk a cold hit costs
            keys = [rng.randrange(filled).to_bytes(8, "little") + b"\xff" * 8 for _ in range(2000)]
            t = time.perf_counter_ns()
            for k in keys:
                assert cache.get_memory(k) is not None
            raw_ns = (time.perf_counter_ns() - t) / len(keys)
            out[str(size)] = {
                **summary(hot),
                "entries": cache.memory_entries,
                "random_get_memory_ns": raw_ns,
                "rss_mb": rss_mb(),
            }
            log(f"cache size {size}: achat hit p50 {out[str(size)]['p50_us']:.1f} us")
        cache.clear()
    return out


async def vs_deployments(
    url: str, c: Counts, floor: dict[str, float], log: Callable[[str], None]
) -> dict[str, Any]:
    """Sequential latency and CPU per request with 1..64 deployments serving the model."""
    out: dict[str, Any] = {}
    for d in c.scale_deployments:
        client = LLMRelay(deployments=d)
        await client.start(url)
        try:
            await timed_loop(client.call, c.warmup, c.block_s)
            cpu0 = time.process_time()
            lat = await timed_loop(client.call, c.seq_n, c.block_s)
            cpu = (time.process_time() - cpu0) / max(1, len(lat)) * 1e6
        finally:
            await client.close()
        s = summary(lat)
        out[str(d)] = {
            **s,
            "cpu_us": cpu,
            "added_p50_us": s["p50_us"] - floor["p50_us"],
            "added_cpu_us": cpu - floor["cpu_us"],
        }
        log(f"{d} deployments: p50 {s['p50_us']:.0f} us")
    return out


async def floor_sequential(url: str, c: Counts) -> dict[str, float]:
    bare = BareAsyncio()
    await bare.start(url)
    try:
        await timed_loop(bare.call, c.warmup, c.block_s)
        cpu0 = time.process_time()
        lat = await timed_loop(bare.call, c.seq_n, c.block_s)
        cpu = (time.process_time() - cpu0) / max(1, len(lat)) * 1e6
    finally:
        await bare.close()
    return {**summary(lat), "cpu_us": cpu}


async def rate_limit_precision(
    url: str, c: Counts, capacity_rps: float, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Admitted vs configured at saturation: 128 callers against a limited deployment."""
    from llmrelay import RateLimitConfig

    out = []
    # rates below what the client can do, so the limiter (not the CPU) is what binds
    for frac in (0.1, 0.5):
        rps = max(5, round(capacity_rps * frac / 5) * 5)
        burst_n = max(1, rps // 10)
        limit = RateLimitConfig(requests_per_minute=rps * 60.0, burst=float(burst_n))
        client = LLMRelay(rate_limit=limit)
        await client.start(url)
        try:
            before = server_requests(url)
            lat, wall, _ = await burst(client.call, 128, 10**9, c.ratelimit_s)
            served = server_requests(url) - before
        finally:
            await client.close()
        allowed = burst_n + rps * wall
        out.append(
            {
                "configured_rps": rps,
                "burst": burst_n,
                "window_s": wall,
                "admitted": served,
                "allowed": allowed,
                "ratio": served / allowed,
                "p50_wait_us": summary(lat)["p50_us"],
            }
        )
        log(f"rate limit {rps}/s: admitted {served} of {allowed:.0f} allowed")
        await asyncio.sleep(0)
    return out
