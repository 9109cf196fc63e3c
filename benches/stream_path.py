"""The streamed path, before and after: chunks per second and client CPU per streamed request.

    python benches/stream_path.py [--before-ref REF] [--rounds 3] [--seq 1000]
                                  [--conc-total 3000] [--pin]

Starts the fake OpenAI server (``compare/fakeserver.py``: a fixed SSE stream of 12
chat.completion.chunk events and ``[DONE]``, one HTTP chunk per event) in its own
process, then runs each client in a fresh process per round, the order rotated every
round, so before and after see the same machine load (read the ratios). Each run: 100
warm-up streams, ``--seq`` sequential streams read to the end (client CPU per streamed
request: ``time.process_time`` of the client process, the core's tokio thread included;
chunks per second of wall time), then ``--conc-total`` streams 64 in flight (chunks per
second, CPU per stream).

Clients: ``llmrelay`` (this tree: SSE framed in the core, whole events handed over in
batches, no httpx object), ``llmrelay (httpx shim)`` (this tree, the same core client
behind the httpx shim, i.e. what a user-supplied transport costs) and, with
``--before-ref``, ``llmrelay before`` (that commit's Python package with this tree's
compiled core: the stream read through httpx objects on RustTransport).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COMPARE = HERE / "compare"
ROOT = HERE.parent


async def _measure(name: str, url: str, seq_n: int, conc_total: int) -> dict[str, float]:
    sys.path.insert(0, str(COMPARE))
    import clients

    client: Any
    if name == "llmrelay (httpx shim)":
        from llmrelay._transport import RustTransport

        class ShimmedRust(RustTransport):
            """The core client behind the httpx shim (a subclass is not sent bytes
            directly: it may override handle_async_request)."""

        client = clients.LLMRelay(lambda _p: ShimmedRust(), name)
    else:
        client = clients.LLMRelay()
    await client.start(url)
    counted = [0]

    async def one() -> None:
        async for ch in client.svc.astream(clients.MESSAGES):
            if ch.text or ch.finish_reason:
                counted[0] += 1

    try:
        for _ in range(100):
            await one()
        counted[0] = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(seq_n):
            await one()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        seq_chunks = counted[0]
        sem = asyncio.Semaphore(64)

        async def gated() -> None:
            async with sem:
                await one()

        await asyncio.gather(*(gated() for _ in range(64)))  # open the connections
        counted[0] = 0
        ccpu0, ct0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(gated() for _ in range(conc_total)))
        ccpu, cwall = time.process_time() - ccpu0, time.perf_counter() - ct0
        conc_chunks = counted[0]
    finally:
        await client.close()
    return {
        "cpu_us": cpu / seq_n * 1e6,
        "chunks_s": seq_chunks / wall,
        "chunks_per_stream": seq_chunks / seq_n,
        "chunks_s64": conc_chunks / cwall,
        "cpu64_us": ccpu / conc_total * 1e6,
    }


def worker(argv: list[str]) -> None:
    name, url, seq_n, conc_total, cpu = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4]
    if cpu != "-" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})
    sys.path.insert(0, str(COMPARE))
    import netguard

    netguard.install()
    print(json.dumps(asyncio.run(_measure(name, url, seq_n, conc_total))))


def _run(name: str, pythonpath: Path, url: str, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    cmd = [sys.executable, __file__, "--worker", name, url, str(args.seq), str(args.conc_total)]
    cmd.append("0" if args.pin else "-")
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=900)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _table(results: dict[str, list[dict[str, float]]]) -> str:
    med = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for name, runs in results.items()
    }
    base = med.get("llmrelay before")
    lines = [
        "| client | CPU µs/stream (seq) | chunks/s (seq) | chunks/s @64 | CPU µs/stream @64 "
        "| chunks/stream |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in med.items():
        lines.append(
            f"| {name} | {m['cpu_us']:.0f} | {m['chunks_s']:,.0f} | {m['chunks_s64']:,.0f} "
            f"| {m['cpu64_us']:.0f} | {m['chunks_per_stream']:.0f} |"
        )
    if base is not None:
        lines += ["", "Ratios to 'llmrelay before' (CPU: lower is better; chunks/s: higher):"]
        for name, m in med.items():
            if name == "llmrelay before":
                continue
            lines.append(
                f"- {name}: CPU/stream {m['cpu_us'] / base['cpu_us']:.2f}x (seq), "
                f"{m['cpu64_us'] / base['cpu64_us']:.2f}x (@64); chunks/s "
                f"{m['chunks_s'] / base['chunks_s']:.2f}x (seq), "
                f"{m['chunks_s64'] / base['chunks_s64']:.2f}x (@64)"
            )
    return "\n".join(lines)


def main() -> None:
    sys.path.insert(0, str(HERE))
    from bytes_path import _before_tree

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before-ref", default=None, help="git ref of the 'before' package")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seq", type=int, default=1000)
    p.add_argument("--conc-total", type=int, default=3000)
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the server to core 1 and each client process to core 0",
    )
    args = p.parse_args()
    here = ROOT / "python"
    variants: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before_ref:
            variants["llmrelay before"] = _before_tree(args.before_ref, Path(tmp))
        variants["llmrelay"] = here
        variants["llmrelay (httpx shim)"] = here
        server = subprocess.Popen(
            [sys.executable, str(COMPARE / "fakeserver.py"), "--port", "0"]
            + (["--cpu", "1"] if args.pin else []),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            results: dict[str, list[dict[str, float]]] = {n: [] for n in variants}
            names = list(variants)
            for r in range(args.rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    results[name].append(_run(name, variants[name], url, args))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait(10)
    load = os.getloadavg()
    pinned = "client on core 0, server on core 1" if args.pin else "not pinned"
    print(
        f"{args.rounds} rounds, medians, {pinned}; "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(_table(results))
    print(json.dumps(results))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
