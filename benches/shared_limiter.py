"""Cost of an admission on the Redis-backed limiter (exact mode), on loopback.

Run: ``PYTHONPATH=python python benches/shared_limiter.py`` (needs
``redis-server`` on the PATH; it starts its own on a free port). Prints, per
call awaited from asyncio: the bridge alone (a call that never reaches Redis:
runtime + Completions round trip), a raw Redis round trip (PING on a blocking
socket, for reference), and ``reserve`` on one key and on three keys (requests,
input and output tokens); then admissions per second on one hot key with 64
tasks in flight. "Added" is what a limiter check costs a request in exact mode.

Then the same through ``LLMService`` (the in-process ``echo`` provider, cache off):
``achat`` with a local rpm+tpm limit and with the same limit shared (``shared`` on
that Redis), the difference being what the shared limits add to a call (the gate
holds the Redis limiter: admit, the check on the runtime, settle with a reconcile),
and admitted calls per second on one deployment with 64 tasks in flight.

Leased mode (``mode="leased"``): ``reserve`` on the leased limiter (mostly a local
take from this process's slice, still awaited through the bridge), the core's
``take_leased`` called directly (the gate's hot path, no bridge), and ``achat``
with the limit shared in leased mode, where the gate answers the permit from the
slice in ``admit`` itself; "added" is its p50/p99 less the local limit's.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from llmrelay import (
    CacheConfig,
    LLMService,
    LLMServiceConfig,
    ProviderConfig,
    RateLimitConfig,
    SharedStateConfig,
)
from llmrelay._shared import SharedLimiter
from redis_server import RedisServer

N = 5000


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


async def timed(label: str, call: Callable[[], Awaitable[object]]) -> float:
    return (await timed2(label, call))[0]


async def timed2(label: str, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    for _ in range(200):  # warm up
        await call()
    samples = []
    for _ in range(N):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    p50, p99 = pct(samples, 0.5) * 1e6, pct(samples, 0.99) * 1e6
    mean = statistics.fmean(samples) * 1e6
    print(f"{label:<38} p50 {p50:8.1f} us   p99 {p99:8.1f} us   mean {mean:8.1f} us")
    return p50, p99


def ping_rtt(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for _ in range(N):
            t0 = time.perf_counter()
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            s.recv(64)
            samples.append(time.perf_counter() - t0)
    print(
        f"{'raw PING round trip (blocking socket)':<38} p50 {pct(samples, 0.5) * 1e6:8.1f} us"
        f"   p99 {pct(samples, 0.99) * 1e6:8.1f} us"
    )


async def main() -> None:
    server = RedisServer()
    try:
        lim = SharedLimiter(SharedStateConfig(url=server.url, op_timeout_s=0.5))
        big = 1e12
        for dim in ("rpm", "tpm_in", "tpm_out"):
            lim.configure(f"d/m:{dim}", big, big)
        one = [("d/m:rpm", 1.0)]
        three = [("d/m:rpm", 1.0), ("d/m:tpm_in", 500.0), ("d/m:tpm_out", 200.0)]
        ping_rtt(server.port)
        await timed("bridge only (unconfigured key)", lambda: lim.available("d/unset:rpm"))
        await timed("reserve, 1 key (exact)", lambda: lim.reserve(one))
        await timed("reserve, 3 keys (exact)", lambda: lim.reserve(three))
        await timed("reserve + reconcile, 3 keys", lambda: _with_reconcile(lim, three))

        lim.configure("hot/m:rpm", 1e9, 1e9)
        done = 0
        until = time.perf_counter() + 2.0

        async def hammer() -> None:
            nonlocal done
            while time.perf_counter() < until:
                await lim.reserve([("hot/m:rpm", 1.0)])
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(hammer() for _ in range(64)))
        rate = done / (time.perf_counter() - t0)
        print(f"{'one hot key, 64 tasks in flight':<38} {rate:8.0f} admissions/s")
        print("stats:", lim.stats())
        await leased_direct(server.url)
        await through_the_service(server.url)
    finally:
        server.stop()


async def leased_direct(url: str) -> None:
    lim = SharedLimiter(
        SharedStateConfig(url=url, namespace="bench-lease", mode="leased", op_timeout_s=0.5)
    )
    for dim in ("rpm", "tpm_in", "tpm_out"):
        lim.configure(f"d/m:{dim}", 1e9, 1e9)
    one = [("d/m:rpm", 1.0)]
    three = [("d/m:rpm", 1.0), ("d/m:tpm_in", 500.0), ("d/m:tpm_out", 200.0)]
    await timed("reserve, 1 key (leased)", lambda: lim.reserve(one))
    await timed("reserve, 3 keys (leased)", lambda: lim.reserve(three))
    core = lim.core
    core.take_leased(three)  # a slice of each
    samples = []
    for _ in range(N):
        t0 = time.perf_counter()
        core.take_leased(three)
        samples.append(time.perf_counter() - t0)
    print(
        f"{'take_leased, 3 keys (core, no bridge)':<38} p50 {pct(samples, 0.5) * 1e6:8.1f} us"
        f"   p99 {pct(samples, 0.99) * 1e6:8.1f} us"
    )
    st = lim.stats()
    print(
        "leased stats: local_admissions",
        st["local_admissions"],
        "lease_calls",
        st["lease_calls"],
        "refills",
        st["refills"],
    )
    await lim.aclose()


def _service_config(url: str | None, mode: str = "exact") -> LLMServiceConfig:
    limit = RateLimitConfig(requests_per_minute=1e9, tokens_per_minute=1e12, burst=10**9)
    shared = None
    if url is not None:
        shared = SharedStateConfig(
            url=url,
            namespace=f"bench-{mode}",
            mode=mode,  # type: ignore[arg-type]
            op_timeout_s=0.5,
            cache=False,
            breakers=False,
            dedup=False,
        )
    return LLMServiceConfig(
        providers=[ProviderConfig(name="echo", kind="echo", rate_limit=limit)],
        default_model="echo/echo",
        cache=CacheConfig(enabled=False),
        shared=shared,
    )


async def through_the_service(url: str) -> None:
    p50 = {}
    p99 = {}
    for label, cfg in (
        ("local", _service_config(None)),
        ("shared", _service_config(url)),
        ("leased", _service_config(url, "leased")),
    ):
        async with LLMService(cfg) as svc:
            p50[label], p99[label] = await timed2(
                f"achat, echo, {label} rpm+tpm limit", lambda: svc.achat("hi", max_tokens=8)
            )
            if label == "leased":
                shared = svc.metrics.snapshot().shared
                print(
                    "leased: local_admissions",
                    shared["local_admissions"],
                    "lease_calls",
                    shared["lease_calls"],
                    "shared_checks",
                    shared["deployments"]["echo"]["shared_checks"],
                )
            if label == "shared":
                done = 0
                until = time.perf_counter() + 2.0

                async def hammer(until: float = until) -> None:
                    nonlocal done
                    while time.perf_counter() < until:
                        await svc.achat("hi", max_tokens=8)
                        done += 1

                t0 = time.perf_counter()
                await asyncio.gather(*(hammer() for _ in range(64)))
                rate = done / (time.perf_counter() - t0)
                print(f"{'achat, shared limit, 64 tasks':<38} {rate:8.0f} admitted calls/s")
                shared = svc.metrics.snapshot().shared
                print("fallbacks:", shared["fallback_calls"], "reconciles:", shared["reconciles"])
    print(f"{'added by the shared limits (p50)':<38} {p50['shared'] - p50['local']:8.1f} us")
    print(
        f"{'added by leased mode (p50 / p99)':<38} {p50['leased'] - p50['local']:8.1f} us"
        f" / {p99['leased'] - p99['local']:8.1f} us"
    )


_ids = iter(range(10**12))


async def _with_reconcile(lim: SharedLimiter, items: list[tuple[str, float]]) -> None:
    rid = f"b{next(_ids)}"
    await lim.reserve(items, reservation=rid)
    await lim.reconcile(rid, items)


if __name__ == "__main__":
    asyncio.run(main())
