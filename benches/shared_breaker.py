"""Cost of shared circuit breakers (Redis on loopback).

Run: ``PYTHONPATH=python python benches/shared_breaker.py`` (needs ``redis-server``
on the PATH; it starts its own on a free port). It prints:

- ``admit+settle``: one permit's admission and settle on a gate, as the
  orchestrator calls them, without a shared breaker, with one on a live Redis,
  and with one on a Redis that does not answer (the publish is spawned: the
  caller never waits for it either way);
- ``publish drain``: settles back to back (far faster than any provider
  answers): how many publishes land in Redis per second (one script each) and
  how many are dropped at the in-flight cap;
- ``open seen by another member``: from the settle whose outcome trips the
  cluster-wide window to another service's cache saying "open" (the notice's
  latency), p50 and max over rounds.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from llmrelay import _core
from redis_server import RedisServer, free_port

N = 20_000
ROUNDS = 30


def gate(name: str, hub: _core.SharedBreakers | None, **kw: int) -> _core.Gate:
    g = _core.Gate(name, limiter=_core.RateLimiter(), **kw)  # type: ignore[arg-type]
    if hub is not None:
        g.share_breaker(hub)
    return g


def admit_settle(g: _core.Gate, n: int, outcome: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        kind, entry, _ = g.admit(5, 10, 10, 30.0, 30.0)
        assert kind == _core.GATE_PERMIT
        g.settle(entry, outcome, 0.01)
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def wait_for(pred: Callable[[], bool], limit_s: float = 30.0) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.0002)
    return False


def main() -> None:
    server = RedisServer()
    try:
        hub = _core.SharedBreakers(server.url, namespace="bench", op_timeout_s=0.5)
        dead = _core.SharedBreakers(
            f"redis://127.0.0.1:{free_port()}/0", namespace="bench", op_timeout_s=0.025
        )
        for label, h in (
            ("no shared breaker", None),
            ("shared, Redis up", hub),
            ("shared, Redis down", dead),
        ):
            g = gate(f"d-{label[:8].strip()}", h)
            admit_settle(g, 2000, _core.SUCCESS)  # warm up
            us = admit_settle(g, N, _core.SUCCESS)
            print(
                f"admit+settle {label:20s} p50 {statistics.median(us):6.2f} us"
                f"  p99 {statistics.quantiles(us, n=100)[98]:6.2f} us"
            )

        g = gate("drain", hub)

        def stat(k: str) -> int:
            return int((g.shared_breaker_stats() or {})[k])

        def settled() -> int:
            return stat("published") + stat("publish_dropped") + stat("publish_errors")

        admit_settle(g, 200, _core.SUCCESS)
        wait_for(lambda: settled() >= 200)
        base = stat("published")
        t = time.perf_counter()
        admit_settle(g, N, _core.SUCCESS)
        ok = wait_for(lambda: settled() >= N + 200)
        took = time.perf_counter() - t
        landed = stat("published") - base
        print(
            f"publish drain: {N:,} settles back to back in {took:.2f} s: {landed:,} published"
            f" ({landed / took:,.0f}/s), {stat('publish_dropped'):,} dropped at the"
            f" {1024}-in-flight cap{'' if ok else ' (cut at 30 s)'}"
        )

        other = _core.SharedBreakers(server.url, namespace="bench", op_timeout_s=0.5)
        lat = []
        kw = {"minimum_calls": 2, "window_size": 2, "open_duration_s": 60}
        for r in range(ROUNDS):
            a, b = gate(f"prop-{r}", hub, **kw), gate(f"prop-{r}", other, **kw)

            def b_stat(k: str, b: _core.Gate = b) -> int:
                return int((b.shared_breaker_stats() or {})[k])

            wait_for(lambda: b_stat("listening") > 0)
            admit_settle(b, 1, _core.FAILURE)  # one bad outcome from b's member
            wait_for(lambda: b_stat("published") >= 1)
            t = time.perf_counter()
            admit_settle(a, 1, _core.FAILURE)  # a's bad outcome trips it (two members)
            if wait_for(b.is_open, 5.0):
                lat.append((time.perf_counter() - t) * 1e6)
        if lat:
            print(
                f"open seen by another member: p50 {statistics.median(lat):,.0f} us, "
                f"max {max(lat):,.0f} us over {len(lat)} of {ROUNDS} rounds"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
