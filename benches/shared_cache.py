"""Cost of a hit on the shared cache tier (Redis on loopback), and of a write.

Run: ``PYTHONPATH=python python benches/shared_cache.py`` (needs
``redis-server`` on the PATH; it starts its own on a free port). For replies
of about 1 KiB and 16 KiB (a ``ChatResponse`` as the engine stores it, with
word-salad text so zstd does real work) it prints, per call awaited from
asyncio:

- ``tier get``: the core's lookup (runtime + Redis round trip + envelope check
  + zstd) through the Completions bridge, as the engine awaits it;
- ``engine shared hit``: the cache stage's shared lookup as a call sees it
  (tier get, msgpack decode into ``ChatResponse``, filling the memory tier);
- ``tier set (caller)``: what queuing a write costs the caller (the write
  itself runs on the runtime).

Target (issue 12): shared-tier hit p50 <= 150 us for replies up to 16 KiB.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import msgspec

from llmrelay import LLMService, SharedStateConfig
from llmrelay._pipeline import cache as cache_stage
from llmrelay._shared_tiers import SharedCacheTier
from llmrelay._types import ChatResponse, Message, Usage
from redis_server import RedisServer
from shared_tier_worker import QUESTION_KW, service_config

N = 3000
WORDS = [
    "the",
    "of",
    "and",
    "a",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
]


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def report(label: str, samples: list[float]) -> float:
    p50, p99 = pct(samples, 0.5) * 1e6, pct(samples, 0.99) * 1e6
    mean = statistics.fmean(samples) * 1e6
    print(f"{label:<34} p50 {p50:8.1f} us   p99 {p99:8.1f} us   mean {mean:8.1f} us")
    return p50


async def timed(label: str, call: Callable[[], Awaitable[object]]) -> float:
    for _ in range(200):  # warm up
        await call()
    samples = []
    for _ in range(N):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    return report(label, samples)


def reply(size: int) -> bytes:
    rng = random.Random(size)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < size - 200:
        words.append(rng.choice(WORDS) + str(rng.randrange(100)))
    text = " ".join(words)
    resp = ChatResponse(
        id="chatcmpl-bench",
        model="gpt-4o-mini",
        provider="openai",
        text=text,
        message=Message(role="assistant", content=text),
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(prompt_tokens=12, completion_tokens=len(words), total_tokens=12 + len(words)),
        cached=True,
    )
    return msgspec.msgpack.encode(resp)


async def main() -> None:
    server = RedisServer()
    try:
        cfg = SharedStateConfig(url=server.url, namespace="bench", op_timeout_s=0.5)
        tier = SharedCacheTier(cfg)
        results: dict[str, float] = {}
        for label, size in (("1 KiB", 1024), ("16 KiB", 16 * 1024)):
            raw = reply(size)
            key = f"key-{size}".encode().ljust(16, b".")
            tier.set(key, raw, 600.0)
            await tier.drain(5.0)
            got = await tier.get(key)
            assert got is not None and got[0] == raw, "the entry did not round-trip"
            print(f"reply {label}: {len(raw)} bytes msgpack")
            results[f"get {label}"] = await timed(
                f"  tier get ({label})", lambda key=key: tier.get(key)
            )
            samples = []
            for i in range(N):
                t0 = time.perf_counter()
                tier.set(key + str(i % 50).encode(), raw, 600.0)
                samples.append(time.perf_counter() - t0)
                if i % 100 == 99:
                    await tier.drain(5.0)
            report(f"  tier set, caller side ({label})", samples)
            await tier.drain(5.0)

        # The engine's shared lookup as a call sees it: memory misses, the shared tier hits.
        fake_url = "http://127.0.0.1:9/v1"  # never called: every lookup below is a hit
        config = service_config(server.url, "bench-engine", fake_url)
        async with LLMService(config) as svc:
            eng = svc._engine
            for label, size in (("1 KiB", 1024), ("16 KiB", 16 * 1024)):
                p = eng.prepare(f"question {size}", None, 2, None, dict(QUESTION_KW), stream=False)
                assert p.key is not None
                eng.shared_cache.set(p.key, reply(size), 600.0)  # type: ignore[union-attr]
                await eng.shared_cache.drain(5.0)  # type: ignore[union-attr]

                async def hit(p: object = p) -> None:
                    # the shared lookup itself (the call had missed memory and disk)
                    assert await cache_stage.shared_hit(eng, p) is not None

                results[f"engine {label}"] = await timed(f"engine shared hit ({label})", hit)
        print()
        for name, p50 in results.items():
            verdict = "ok" if p50 <= 150 else "ABOVE the 150 us target"
            print(f"target p50 <= 150 us, {name}: {p50:.1f} us ({verdict})")
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
