"""RSS stays flat under sustained traffic: cached-path and provider-path requests.

After a warm-up (pools, caches, histograms and allocator arenas at their working size),
many more requests must not grow the resident set by more than 10% (plus a small
absolute slack for allocator noise).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time

import pytest

from llmrelay import CacheConfig, LLMService
from llmrelay.testing import FakeProvider
from service_helpers import ConfigFactory
from soak_helpers import count, report

SLACK_BYTES = 8 * 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """The resident set size of this process, from /proc/self/statm."""
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def check_flat(before: int, after: int) -> None:
    assert after <= before * 1.10 + SLACK_BYTES, (
        f"RSS grew from {before / 2**20:.1f} MiB to {after / 2**20:.1f} MiB"
    )


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_cached_path_rss_is_flat(make_config: ConfigFactory) -> None:
    n = count(100_000, 1_000_000)
    warm = n // 10
    prompts = [f"cached prompt {i}" for i in range(200)]
    cfg = make_config(cache=CacheConfig(memory_max_entries=1_000))
    with LLMService(cfg) as svc:
        for p in prompts:  # fill the cache from the provider once
            svc.chat(p, temperature=0)
        for i in range(warm):
            svc.chat(prompts[i % len(prompts)], temperature=0)
        before = rss_bytes()
        t0 = time.perf_counter()
        for i in range(n):
            r = svc.chat(prompts[i % len(prompts)], temperature=0)
            assert r.cached
        took = time.perf_counter() - t0
        after = rss_bytes()
    check_flat(before, after)
    report(
        "memory_cached",
        {
            "requests": n,
            "rss_before_mib": round(before / 2**20, 1),
            "rss_after_mib": round(after / 2**20, 1),
            "us_per_request": round(took / n * 1e6, 1),
        },
    )


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
async def test_provider_path_rss_is_flat(
    make_config: ConfigFactory, fakes: dict[str, FakeProvider]
) -> None:
    n = count(10_000, 100_000)
    warm = max(1_000, n // 10)
    # the fake keeps a log of every request: keep it from growing during the measurement
    async with LLMService(make_config(cache=CacheConfig(enabled=False))) as svc:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                if i % 3 == 0:
                    async for _ in svc.astream(f"provider {i}", "claude/claude-haiku-4-5"):
                        pass
                else:
                    await svc.achat(f"provider {i}", temperature=0.5)

        async def run(start: int, k: int) -> None:
            for base in range(start, start + k, 1_000):
                await asyncio.gather(*(one(i) for i in range(base, min(start + k, base + 1_000))))
                for fake in fakes.values():
                    fake.reset()

        await run(0, warm)
        before = rss_bytes()
        t0 = time.perf_counter()
        await run(warm, n)
        took = time.perf_counter() - t0
        after = rss_bytes()
        assert svc.metrics.snapshot().total("successes") == warm + n
    check_flat(before, after)
    report(
        "memory_provider",
        {
            "requests": n,
            "rss_before_mib": round(before / 2**20, 1),
            "rss_after_mib": round(after / 2**20, 1),
            "requests_per_s": round(n / took),
        },
    )
