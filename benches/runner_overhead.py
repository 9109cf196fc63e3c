"""The file runner's own cost: per line beyond the call, and a rerun served from disk.

1. Overhead per line (target <= 20 us beyond the call): the runner over N lines
   whose call is a stub returning a ready response, so what is timed is the runner
   alone (read and parse the line, back-pressure, encode and append the output
   line, count). Printed with the echo provider's pipeline for scale.
2. A 10,000-line rerun served wholly from the disk cache (target <= 2 s): a first
   run fills the disk tier, a fresh service (empty memory tier) reruns the file into
   a new output. Also the time of a rerun that skips every line (same output).

    python benches/runner_overhead.py [--n 20000] [--rerun 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from llmrelay import CacheConfig, ChatResponse, LLMService, LLMServiceConfig, ProviderConfig
from llmrelay._runner import FileRunner


def _config(**kw: object) -> LLMServiceConfig:
    return LLMServiceConfig(
        providers=[ProviderConfig(name="echo", kind="echo")], default_model="echo/echo", **kw
    )


def _input(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "prompt": f"question {i}", "temperature": 0}))
            f.write("\n")
    return path


async def _overhead(tmp: Path, n: int) -> list[str]:
    src = _input(tmp / "overhead.jsonl", n)
    out: list[str] = []
    async with LLMService(_config(cache=CacheConfig(enabled=False))) as svc:
        ready = await svc.achat("question 0", temperature=0)

        async def stub(job: object) -> ChatResponse:
            return ready

        for conc in (1, 64):
            runs, cpu = [], []
            for rep in range(3):
                dst = tmp / f"overhead-{conc}-{rep}.jsonl"
                runner = FileRunner(svc, src, dst, concurrency=conc, progress=None)
                runner._call = stub  # type: ignore[method-assign]
                t0, c0 = time.perf_counter(), time.process_time()
                await runner.run()
                runs.append((time.perf_counter() - t0) / n * 1e6)
                cpu.append((time.process_time() - c0) / n * 1e6)
            out.append(
                f"runner overhead per line, concurrency {conc:<3}  best {min(runs):7.2f} us"
                f"   median {statistics.median(runs):7.2f} us   CPU {min(cpu):7.2f} us"
                f"   (target <= 20 us)   n={n}"
            )
        # for scale: the echo provider's whole pipeline per call, and the runner around it
        t0 = time.perf_counter()
        for i in range(n):
            await svc.achat(f"question {i}", temperature=0)
        call = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        await svc.arun_file(src, tmp / "echo.jsonl", concurrency=1, progress=False)
        full = (time.perf_counter() - t0) / n * 1e6
        out.append(
            f"echo provider: achat {call:7.2f} us/call; arun_file {full:7.2f} us/line"
            f" (difference {full - call:+.2f} us, noisy: includes the call)"
        )
    return out


async def _rerun(tmp: Path, n: int) -> list[str]:
    src = _input(tmp / "rerun.jsonl", n)
    cfg = _config(cache=CacheConfig(disk_path=str(tmp / "cache"), memory_max_entries=n))
    async with LLMService(cfg) as svc:
        t0 = time.perf_counter()
        await svc.arun_file(src, tmp / "first.jsonl", progress=False)
        first = time.perf_counter() - t0
    async with LLMService(cfg) as svc:
        t0, c0 = time.perf_counter(), time.process_time()
        s = await svc.arun_file(src, tmp / "second.jsonl", progress=False)
        disk, disk_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert s.cached == n, s
        t0 = time.perf_counter()
        s = await svc.arun_file(src, tmp / "second.jsonl", progress=False)
        skip = time.perf_counter() - t0
        assert s.skipped == n, s
    return [
        f"first run, {n} lines (echo provider, fills the disk tier)  {first:6.2f} s",
        f"rerun served from the disk cache, {n} lines          {disk:6.2f} s"
        f"   CPU {disk_cpu:6.2f} s   (target <= 2 s)",
        f"rerun skipping every line (all in the output)       {skip:6.2f} s",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rerun", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for line in asyncio.run(_overhead(tmp, args.n)) + asyncio.run(_rerun(tmp, args.rerun)):
            print(line)


if __name__ == "__main__":
    main()
