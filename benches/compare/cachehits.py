"""The cache-hit path: LiteLLM's in-memory cache vs llmrelay's memory and disk tiers.

Each side answers the same request once from the server (the miss that fills the cache),
then ``n`` times from its cache; the server's request count proves those were hits.
"""

from __future__ import annotations

import asyncio
import importlib.util
import tempfile
import time
from collections.abc import Callable
from typing import Any

from clients import MESSAGES, LiteLLM, llmrelay_config
from harness import Counts, server_requests, summary, timed_loop


async def _hits(
    name: str, call: Callable[[], Any], url: str, n: int, limit_s: float
) -> dict[str, Any]:
    await call()  # the miss that fills the cache (or a warm hit)
    await asyncio.sleep(0.2)  # LiteLLM writes its cache in the background
    await call()
    before = server_requests(url)
    cpu0 = time.process_time()
    lat = await timed_loop(call, n, limit_s)
    cpu = time.process_time() - cpu0
    reached = server_requests(url) - before
    assert reached == 0, f"{name}: {reached} of {len(lat)} cache 'hits' reached the server"
    return {**summary(lat), "cpu_us": cpu / max(1, len(lat)) * 1e6}


async def cache_hits(url: str, c: Counts, log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if importlib.util.find_spec("litellm") is not None:
        from litellm.caching.caching import Cache

        client = LiteLLM()
        await client.start(url)
        client.litellm.cache = Cache(type="local")
        try:
            out["LiteLLM (in-memory cache)"] = await _hits(
                "LiteLLM",
                lambda: client.call(caching=True, temperature=0),
                url,
                c.cache_n,
                c.block_s,
            )
        finally:
            client.litellm.cache = None
        log("LiteLLM cache hits done")

    from llmrelay import CacheConfig, LLMService

    async with LLMService(llmrelay_config(url, cache=CacheConfig())) as svc:

        async def mem() -> None:
            r = await svc.achat(MESSAGES, temperature=0)
            assert r.cached or r.attempts == 1

        out["llmrelay memory tier (achat)"] = await _hits(
            "llmrelay", mem, url, c.cache_n, c.block_s
        )

        async def sync_mem() -> None:  # the sync twin answers memory hits in the calling thread
            r = svc.chat(MESSAGES, temperature=0)
            assert r.cached

        out["llmrelay memory tier (sync chat)"] = await _hits(
            "llmrelay sync", sync_mem, url, c.cache_n, c.block_s
        )

    with tempfile.TemporaryDirectory(prefix="llmrelay-bench-") as tmp:
        path = f"{tmp}/cache"
        async with LLMService(llmrelay_config(url, cache=CacheConfig(disk_path=path))) as svc:
            await svc.achat(MESSAGES, temperature=0)  # reaches the server; stored on disk
        # a fresh service over the same disk tier: its memory tier is empty, and promotion
        # after 10**9 hits keeps every answer coming from disk
        disk = CacheConfig(disk_path=path, promotion="after_n_hits", promote_after=10**9)
        async with LLMService(llmrelay_config(url, cache=disk)) as svc:

            async def from_disk() -> None:
                r = await svc.achat(MESSAGES, temperature=0)
                assert r.cached

            out["llmrelay disk tier (achat)"] = await _hits(
                "llmrelay disk", from_disk, url, c.cache_n, c.block_s
            )
    log("llmrelay cache hits done")
    return out
