"""``make demo-cluster``: four worker processes sharing one rate limit through Redis.

Starts a throwaway ``redis-server`` on a free loopback port (no persistence), a fake
OpenAI-compatible provider in a process of its own, and four worker processes
(``multiprocessing`` ``spawn``), each with its own ``LLMService`` whose deployment has
``shared`` limits. They call as fast as they can for a few seconds; the demo prints,
per one-second window, how many calls were admitted across the cluster against what
the limit allows (burst + rate x elapsed), then stops everything by PID.

    PYTHONPATH=python:tests python tests/cluster_demo.py [--workers 4] [--seconds 6]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import signal
import sys
import time

from cluster_worker import Plan, Report, hammer
from llmrelay.testing import FakeProvider
from redis_server import RedisServer


def _run(plan: Plan, workers: int, seconds: float) -> tuple[float, list[Report], list[int]]:
    ctx = mp.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    window = ctx.Array("d", 2)
    procs = [
        ctx.Process(target=hammer, args=(plan, ready, go, window, out), daemon=True)
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    pids = [p.pid or 0 for p in procs]
    try:
        for _ in procs:
            ready.get(timeout=120)
        start = time.time() + 0.5
        window[0], window[1] = start, start + seconds
        go.set()
        reports = [out.get(timeout=seconds + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                os.kill(p.pid or 0, signal.SIGKILL)  # by its PID, never by name
                p.join()
    return start, reports, pids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--rpm", type=float, default=600.0, help="the shared limit, per minute")
    ap.add_argument("--burst", type=int, default=20)
    args = ap.parse_args(argv)
    rate = args.rpm / 60.0
    redis = RedisServer()
    fake = None
    try:
        fake = FakeProvider.spawn("openai")
        print(
            f"redis-server pid {redis.proc.pid} at {redis.url} (no persistence); "
            f"fake provider pid {fake.process.pid} at {fake.url}"
        )
        plan = Plan(redis.url, fake.base_url, f"demo{os.getpid()}", rpm=args.rpm, burst=args.burst)
        print(
            f"{args.workers} worker processes share one limit: {args.rpm:g} requests/min"
            f" ({rate:g}/s), burst {args.burst}; {args.seconds} s window"
        )
        start, reports, pids = _run(plan, args.workers, float(args.seconds))
        print(f"workers: pids {pids}")
        per_second = [0] * args.seconds
        for r in reports:
            for t in r.replies:
                per_second[min(args.seconds - 1, int(t - start))] += 1
        print(f"{'second':>6} {'admitted':>9} {'limit/s':>8} {'total':>6} {'allowed':>8}")
        total = 0
        for k, n in enumerate(per_second):
            total += n
            allowed = args.burst + rate * (k + 1)
            limit_s = args.burst + rate if k == 0 else rate
            print(f"{k + 1:>6} {n:>9} {limit_s:>8g} {total:>6} {allowed:>8g}")
        cap = args.burst + rate * args.seconds
        by_worker = {r.pid: len(r.replies) for r in reports}
        fallbacks = sum(r.shared.get("fallback_calls", 0) for r in reports)
        print(
            f"admitted {total} of C = burst + rate x window = {cap:g}"
            f" ({total / cap:.1%}); per worker {by_worker}; decided without Redis: {fallbacks}"
        )
        ok = total <= math.floor(cap)
        print("within the limit" if ok else "ABOVE THE LIMIT")
        return 0 if ok else 1
    finally:
        if fake is not None:
            fake.close()  # terminates its process (by PID) and reaps it
        redis.stop()  # by its PID


if __name__ == "__main__":
    sys.exit(main())
