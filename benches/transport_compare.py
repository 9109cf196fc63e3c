"""Compare httpx transports on a loopback chat endpoint; prints a table.

    .venv/bin/python benches/transport_compare.py [--rounds 3] [--seq 2000] [--conc 5000]

The server is a bare asyncio HTTP/1.1 server in a separate process answering a
small OpenAI-style chat completion. Each round measures every client in turn
(interleaved, so machine noise hits all alike): sequential client CPU per
request (``time.process_time`` over N requests, so the runtime's threads
count too) and p50 latency, then throughput with 64 requests in flight. The
figure reported is the median over rounds. Clients: httpx's default
transport, ``RustTransport``, and ``httpx-aiohttp`` when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _chat_server import running
from llmrelay._transport import RustTransport

PAYLOAD = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'
HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
CONCURRENCY = 64


def clients() -> dict[str, Callable[[], httpx.AsyncClient]]:
    """The clients to compare, by name."""
    made: dict[str, Callable[[], httpx.AsyncClient]] = {
        "httpx default": lambda: httpx.AsyncClient(),
        "RustTransport": lambda: httpx.AsyncClient(transport=RustTransport()),
    }
    try:
        from httpx_aiohttp import AiohttpTransport
    except ImportError:
        pass
    else:
        made["httpx-aiohttp"] = lambda: httpx.AsyncClient(transport=AiohttpTransport())
    return made


async def chat(client: httpx.AsyncClient, url: str) -> None:
    r = await client.post(url, content=PAYLOAD, headers=HEADERS)
    if r.status_code != 200 or not r.content.startswith(b'{"id"'):
        raise RuntimeError(f"bad reply {r.status_code}")


async def sequential(client: httpx.AsyncClient, url: str, n: int) -> tuple[float, float]:
    """(client CPU µs per request, p50 latency µs) over `n` requests."""
    for _ in range(min(200, n)):
        await chat(client, url)
    lat = []
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        await chat(client, url)
        lat.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    return cpu / n * 1e6, statistics.median(lat) * 1e6


async def concurrent(client: httpx.AsyncClient, url: str, total: int) -> float:
    """Requests per second with CONCURRENCY in flight, `total` requests in all."""
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await chat(client, url)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))  # warm the pool
    left = total
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return total / (time.perf_counter() - t0)


async def measure(url: str, rounds: int, seq: int, conc: int) -> dict[str, list[float]]:
    """Per client: median (cpu µs, p50 µs, req/s) over `rounds` interleaved rounds."""
    makers = clients()
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in makers}
    for _ in range(rounds):
        for name, make in makers.items():
            async with make() as client:
                cpu, p50 = await sequential(client, url, seq)
                rps = await concurrent(client, url, conc)
            runs[name].append((cpu, p50, rps))
    return {
        name: [statistics.median(r[i] for r in rs) for i in range(3)] for name, rs in runs.items()
    }


def table(results: dict[str, list[float]]) -> str:
    base_cpu, _, base_rps = results["httpx default"]
    lines = [
        "| client | CPU µs/req (seq) | p50 µs (seq) | req/s @64 | CPU vs httpx | req/s vs httpx |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (cpu, p50, rps) in results.items():
        lines.append(
            f"| {name} | {cpu:.0f} | {p50:.0f} | {rps:,.0f} | "
            f"{cpu / base_cpu:.2f}x | {rps / base_rps:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq", type=int, default=2000, help="sequential requests per round")
    parser.add_argument("--conc", type=int, default=5000, help="concurrent requests per round")
    args = parser.parse_args()
    with running() as base:
        results = asyncio.run(
            measure(f"{base}/v1/chat/completions", args.rounds, args.seq, args.conc)
        )
    print(table(results))


if __name__ == "__main__":
    main()
