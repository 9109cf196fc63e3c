"""The comparison's measurements, run inside one client process (pinned to one core).

Clients are measured round-robin per repetition (the order rotates each time), so drift in
the machine's load hits all of them alike. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from clients import Client


@dataclass
class Counts:
    """How much to measure; ``smoke()`` is the tiny run of the smoke test."""

    seq_n: int = 400  # sequential requests per client per repetition
    reps: int = 5
    warmup: int = 50
    conc_levels: tuple[int, ...] = (16, 64, 256)
    conc_total: int = 600  # requests per client per concurrency block
    stream_n: int = 150
    cache_n: int = 2000
    block_s: float = 10.0  # time bound of issuing in any one block
    rss_requests: int = 10_000
    import_tries: int = 5
    scale_conc: tuple[int, ...] = (1, 4, 16, 64, 256, 1024)
    scale_cache: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    scale_deployments: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    ratelimit_s: float = 3.0

    @classmethod
    def smoke(cls) -> Counts:
        return cls(
            seq_n=5,
            reps=2,
            warmup=2,
            conc_levels=(4,),
            conc_total=12,
            stream_n=3,
            cache_n=5,
            block_s=10.0,
            rss_requests=20,
            import_tries=1,
            scale_conc=(1, 4),
            scale_cache=(100, 1_000),
            scale_deployments=(1, 2),
            ratelimit_s=0.5,
        )


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs, nearest rank."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(lat: list[float]) -> dict[str, float]:
    return {
        "n": len(lat),
        "p50_us": pct(lat, 0.5) * 1e6,
        "p90_us": pct(lat, 0.9) * 1e6,
        "p99_us": pct(lat, 0.99) * 1e6,
        "mean_us": statistics.fmean(lat) * 1e6 if lat else float("nan"),
    }


def server_requests(url: str) -> int:
    """How many chat requests the fake server has answered (its ``GET /stats``)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(json.loads(data.split(b"\r\n\r\n", 1)[1])["requests"])


async def settle(limit_s: float = 3.0) -> None:
    """Wait (bounded) until the process is quiet: background work a client left behind
    (LiteLLM's logging tasks and threads, pools closing idle connections) must not run
    inside the next client's block. Quiet = under 10% of a core busy over 50 ms."""
    gc.collect()
    end = time.perf_counter() + limit_s
    while time.perf_counter() < end:
        cpu0 = time.process_time()
        await asyncio.sleep(0.05)
        if time.process_time() - cpu0 < 0.005:
            return


def _rotated(clients: list[Client], rep: int) -> list[Client]:
    k = rep % len(clients)
    return clients[k:] + clients[:k]


async def timed_loop(fn: Callable[[], Awaitable[Any]], n: int, limit_s: float) -> list[float]:
    """Up to n sequential awaits of fn() (stopping at limit_s): each one's latency in s."""
    lat: list[float] = []
    pc = time.perf_counter
    end = pc() + limit_s
    for _ in range(n):
        t = pc()
        await fn()
        t1 = pc()
        lat.append(t1 - t)
        if t1 > end:
            break
    return lat


async def sequential(
    clients: list[Client], c: Counts, log: Callable[[str], None]
) -> dict[str, Any]:
    """Sequential latency and client CPU per request (process_time over the block)."""
    lat: dict[str, list[float]] = {k.name: [] for k in clients}
    cpu: dict[str, float] = dict.fromkeys(lat, 0.0)
    for k in clients:
        await timed_loop(k.call, c.warmup, c.block_s)
    for rep in range(c.reps):
        for k in _rotated(clients, rep):
            await settle()
            cpu0 = time.process_time()
            got = await timed_loop(k.call, c.seq_n, c.block_s)
            cpu[k.name] += time.process_time() - cpu0
            lat[k.name] += got
        log(f"sequential rep {rep + 1}/{c.reps}")
    return {
        name: {**summary(xs), "cpu_us": cpu[name] / max(1, len(xs)) * 1e6, "lat_us": _sample(xs)}
        for name, xs in lat.items()
    }


def _sample(xs: list[float], k: int = 2000) -> list[float]:
    """At most k latencies (in us), evenly taken, for the distribution plots."""
    step = max(1, len(xs) // k)
    return [round(x * 1e6, 1) for x in xs[::step]]


async def burst(
    fn: Callable[[], Awaitable[Any]], conc: int, total: int, limit_s: float
) -> tuple[list[float], float, float]:
    """total calls by conc workers: (latencies, wall seconds, client CPU seconds)."""
    lat: list[float] = []
    issued = 0
    pc = time.perf_counter
    end = pc() + limit_s

    async def worker() -> None:
        nonlocal issued
        while issued < total and pc() < end:
            issued += 1
            t = pc()
            await fn()
            lat.append(pc() - t)

    cpu0 = time.process_time()
    t0 = pc()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return lat, pc() - t0, time.process_time() - cpu0


async def concurrent(
    clients: list[Client], c: Counts, levels: tuple[int, ...], log: Callable[[str], None]
) -> dict[str, Any]:
    """Throughput and latency at each concurrency level, clients interleaved per repetition."""
    out: dict[str, Any] = {}
    reps = max(1, min(2, c.reps))
    for conc in levels:
        total = max(c.conc_total, conc)
        lat: dict[str, list[float]] = {k.name: [] for k in clients}
        wall = dict.fromkeys(lat, 0.0)
        cpu = dict.fromkeys(lat, 0.0)
        for k in clients:  # open the connections
            await burst(k.call, conc, conc, c.block_s)
        for rep in range(reps):
            for k in _rotated(clients, rep):
                await settle()
                xs, w, u = await burst(k.call, conc, total, c.block_s)
                lat[k.name] += xs
                wall[k.name] += w
                cpu[k.name] += u
        out[str(conc)] = {
            name: {
                **summary(xs),
                "rps": len(xs) / wall[name] if wall[name] else 0.0,
                "cpu_us": cpu[name] / max(1, len(xs)) * 1e6,
            }
            for name, xs in lat.items()
        }
        log(f"concurrency {conc} done")
    return out


async def streaming(clients: list[Client], c: Counts, log: Callable[[str], None]) -> dict[str, Any]:
    """Sequential streamed chats: time to first content chunk, and total."""
    first: dict[str, list[float]] = {k.name: [] for k in clients}
    total: dict[str, list[float]] = {k.name: [] for k in clients}
    for k in clients:
        for _ in range(min(10, c.stream_n)):
            await k.stream()
    pc = time.perf_counter
    for rep in range(max(1, min(3, c.reps))):
        for k in _rotated(clients, rep):
            await settle()
            end = pc() + c.block_s
            for _ in range(c.stream_n):
                t = pc()
                f = await k.stream()
                t1 = pc()
                assert f, f"{k.name}: no content chunk"
                first[k.name].append(f - t)
                total[k.name].append(t1 - t)
                if t1 > end:
                    break
    log("streaming done")
    return {
        name: {
            "ttfc_p50_us": pct(first[name], 0.5) * 1e6,
            "ttfc_p99_us": pct(first[name], 0.99) * 1e6,
            "total_p50_us": pct(total[name], 0.5) * 1e6,
            "total_p99_us": pct(total[name], 0.99) * 1e6,
            "n": len(total[name]),
        }
        for name in first
    }
