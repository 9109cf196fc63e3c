"""llmrelay side by side with the incumbents: ``make bench-compare`` runs this.

    python benches/compare/run.py [--smoke] [--out docs] [--json FILE] [--skip PHASE ...]
    python benches/compare/run.py --report-only docs/plots/results.json --out docs

Starts the fake OpenAI server (fakeserver.py) in its own process pinned to one core, pins
itself to the other, measures every importable client (sequential, concurrent, streaming,
cache hits, import time and RSS) and llmrelay's scale curves, then writes
``<out>/benchmarks.md`` and ``<out>/plots/*.png`` (report.py). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import netguard  # noqa: E402

netguard.install()

import cachehits  # noqa: E402
import clients  # noqa: E402
import harness  # noqa: E402
import scale  # noqa: E402

PHASES = ("sequential", "concurrent", "streaming", "cache", "imports", "rss", "scale")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cores() -> tuple[int | None, int | None]:
    """(server core, client core), or Nones where affinity is unavailable or one core only."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        return None, None
    return mine[-1], mine[0]


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start_server(cpu: int | None) -> tuple[subprocess.Popen[str], str]:
    args = [sys.executable, str(HERE / "fakeserver.py"), "--port", "0"]
    if cpu is not None:
        args += ["--cpu", str(cpu)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"the fake server did not start (got {url!r})")
    return proc, url


def _worker(*args: str, timeout: float = 180.0) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, str(HERE / "worker.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(HERE),
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"worker {args} failed: {r.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def imports(c: harness.Counts) -> dict[str, Any]:
    """Best-of-N import time and the RSS after it, each in a fresh interpreter."""
    import importlib.util

    mods = ["-", "httpx", "openai", "litellm", "llmrelay"]
    out: dict[str, Any] = {}
    for m in mods:
        if m != "-" and importlib.util.find_spec(m) is None:
            continue
        runs = [_worker("import", m) for _ in range(c.import_tries)]
        out["python (nothing)" if m == "-" else m] = {
            "import_ms": min(r["import_s"] for r in runs) * 1e3,
            "rss_mb": sorted(r["rss_mb"] for r in runs)[len(runs) // 2],
        }
        log(f"import {m}: {out['python (nothing)' if m == '-' else m]}")
    return out


def rss(names: list[str], url: str, c: harness.Counts, cpu: int | None) -> dict[str, Any]:
    out = {}
    for name in names:
        out[name] = _worker("rss", name, url, str(c.rss_requests), str(-1 if cpu is None else cpu))
        log(f"rss {name}: {out[name]}")
    return out


async def measure(url: str, c: harness.Counts, skip: set[str], cpu: int | None) -> dict[str, Any]:
    rust = await clients.default_is_rust(url)
    res: dict[str, Any] = {"llmrelay default transport": "RustTransport" if rust else "httpx"}
    cl = clients.available(rust)
    log("clients: " + ", ".join(k.name for k in cl))
    for k in cl:
        await k.start(url)
        assert await k.call(), k.name
    try:
        if "sequential" not in skip:
            res["sequential"] = await harness.sequential(cl, c, log)
        if "concurrent" not in skip:
            res["concurrent"] = await harness.concurrent(cl, c, c.conc_levels, log)
        if "streaming" not in skip:
            res["streaming"] = await harness.streaming(cl, c, log)
        if "scale" not in skip:
            res["scale_concurrency"] = await scale.vs_concurrency(cl, c, log)
    finally:
        for k in cl:
            await k.close()
    if "cache" not in skip:
        res["cache"] = await cachehits.cache_hits(url, c, log)
    if "scale" not in skip:
        res["scale_cache"] = await scale.vs_cache_size(url, c, log)
        floor = await scale.floor_sequential(url, c)
        res["scale_deployments"] = await scale.vs_deployments(url, c, floor, log)
        cap = res.get("scale_concurrency", {}).get("64", {}).get("llmrelay", {}).get("rps", 1000)
        res["rate_limit"] = await scale.rate_limit_precision(url, c, cap, log)
    if "imports" not in skip:
        res["imports"] = imports(c)
    if "rss" not in skip:
        res["rss"] = rss([k.name for k in cl], url, c, cpu)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true", help="minimal counts (the smoke test)")
    p.add_argument("--out", default=None, help="write benchmarks.md and plots/ here")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--skip", nargs="*", default=[], choices=PHASES)
    p.add_argument("--report-only", default=None, help="rewrite --out from this results.json")
    args = p.parse_args(argv)
    if args.report_only:
        import report

        res = json.loads(Path(args.report_only).read_text())
        report.write(res, Path(args.out or "docs"))
        return res
    c = harness.Counts.smoke() if args.smoke else harness.Counts()
    raise_fd_limit()
    server_cpu, client_cpu = cores()
    original = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    proc, url = start_server(server_cpu)
    started = time.time()
    try:
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        log(f"server {url} (core {server_cpu}), client core {client_cpu}")
        res = asyncio.run(measure(url, c, set(args.skip), client_cpu))
    finally:
        if client_cpu is not None and original is not None:
            os.sched_setaffinity(0, original)
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert not netguard.blocked, f"something tried to leave loopback: {netguard.blocked}"
    import report

    res["meta"] = {
        "machine": report.machine(),
        "duration_s": time.time() - started,
        "server_core": server_cpu,
        "client_core": client_cpu,
        "counts": c.__dict__,
        "smoke": args.smoke,
        "llmrelay default transport": res.pop("llmrelay default transport"),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.out:
        import report

        report.write(res, Path(args.out))
        log(f"wrote {args.out}/benchmarks.md")
    return res


if __name__ == "__main__":
    main()
