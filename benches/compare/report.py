"""Turn run.py's results into ``benchmarks.md`` (tables, machine, versions) and PNG plots."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASE = "httpx"
FLOOR = "bare asyncio"
PACKAGES = ("llmrelay", "httpx", "openai", "litellm", "aiohttp", "msgspec", "matplotlib", "maturin")


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=HERE,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "llmrelay commit": commit or "?",
    }


def versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def f(x: float | None, digits: int = 0) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b or a != a or b != b:
        return "-"
    return f"{a / b:.2f}x"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _llmrelay_names(res: dict[str, Any]) -> list[str]:
    seq = res.get("sequential", {})
    return [n for n in seq if n.startswith("llmrelay") and "httpx" not in n]


def targets(res: dict[str, Any]) -> list[list[str]]:
    """The issue's targets against what was measured, for every llmrelay variant."""
    rows = []
    seq, conc = res.get("sequential", {}), res.get("concurrent", {}).get("64", {})
    cache, imp, rss = res.get("cache", {}), res.get("imports", {}), res.get("rss", {})
    floor64 = conc.get(FLOOR, {})
    for name in _llmrelay_names(res):
        if FLOOR in seq and name in seq:
            r = seq[name]["cpu_us"] / seq[FLOOR]["cpu_us"]
            rows.append(
                [
                    f"{name}: client CPU per sequential request vs bare asyncio",
                    "≤ 1.5x",
                    f"{r:.2f}x",
                    "yes" if r <= 1.5 else "**no**",
                ]
            )
        if floor64 and name in conc:
            r = conc[name]["rps"] / floor64["rps"]
            rows.append(
                [
                    f"{name}: throughput at 64 concurrent vs bare asyncio",
                    "≥ 0.5x",
                    f"{r:.2f}x",
                    "yes" if r >= 0.5 else "**no**",
                ]
            )
        if BASE in seq:
            r = seq[name]["cpu_us"] / seq[BASE]["cpu_us"]
            rows.append(
                [
                    f"{name}: client CPU per sequential request vs raw httpx",
                    "≤ 0.35x",
                    f"{r:.2f}x",
                    "yes" if r <= 0.35 else "**no**",
                ]
            )
        if BASE in conc and name in conc:
            r = conc[name]["rps"] / conc[BASE]["rps"]
            rows.append(
                [
                    f"{name}: throughput at 64 concurrent vs raw httpx",
                    "≥ 10x",
                    f"{r:.2f}x",
                    "yes" if r >= 10 else "**no**",
                ]
            )
        if FLOOR in conc and "LiteLLM Router" in conc and name in conc:
            floor = conc[FLOOR]["p99_us"]
            mine = conc[name]["p99_us"] - floor
            router = conc["LiteLLM Router"]["p99_us"] - floor
            r = router / mine if mine > 0 else float("inf")
            rows.append(
                [
                    f"{name}: added p99 at 64 concurrent, LiteLLM Router's / ours",
                    "≥ 20x",
                    f"{r:.1f}x ({f(mine)} µs vs {f(router)} µs)",
                    "yes" if r >= 20 else "**no**",
                ]
            )
        if name in rss:
            m = rss[name]["rss_mb"]
            rows.append(
                [
                    f"{name}: RSS after {rss[name]['requests']:,} requests",
                    "≤ 40 MB",
                    f"{m:.1f} MB",
                    "yes" if m <= 40 else "**no**",
                ]
            )
    lite = cache.get("LiteLLM (in-memory cache)")
    mem = cache.get("llmrelay memory tier (achat)")
    if lite and mem:
        r = lite["p50_us"] / mem["p50_us"]
        rows.append(
            [
                "memory-cache hit (achat), LiteLLM's p50 / ours",
                "≥ 50x",
                f"{r:.1f}x",
                "yes" if r >= 50 else "**no**",
            ]
        )
    if "llmrelay" in imp:
        ms, mb = imp["llmrelay"]["import_ms"], imp["llmrelay"]["rss_mb"]
        rows.append(
            [
                "`import llmrelay` (best of several, fresh process)",
                "≤ 150 ms",
                f"{ms:.0f} ms",
                "yes" if ms <= 150 else "**no**",
            ]
        )
        rows.append(
            [
                "RSS after `import llmrelay`",
                "≤ 40 MB",
                f"{mb:.1f} MB",
                "yes" if mb <= 40 else "**no**",
            ]
        )
    return rows


def markdown(res: dict[str, Any], plots: list[str]) -> str:
    m, v = res.get("meta", {}).get("machine") or machine(), versions()
    seq = res.get("sequential", {})
    lines = [
        "# Benchmarks: llmrelay side by side with the incumbents",
        "",
        "Generated by `make bench-compare` (benches/compare/run.py; raw figures in",
        "`docs/plots/results.json`). One fake OpenAI-compatible server (benches/compare/",
        "fakeserver.py: prebuilt replies, asyncio) runs in its own process pinned to one core;",
        "the client process is pinned to the other core, so client CPU is what limits",
        "throughput. Clients are measured round-robin per repetition (the order rotates), so",
        "drift in the machine's load hits all alike. Client CPU is `time.process_time()` of",
        "the whole client process (every thread, Rust runtime threads included) over the",
        "block, divided by the requests in it. llmrelay runs with its cache and dedup off",
        "(every call reaches the server) and the orchestrator's concurrency limit at 2,048.",
        f"Duration of this run: {res.get('meta', {}).get('duration_s', 0):.0f} s.",
        "",
        "## Machine and versions",
        "",
    ]
    transport = res.get("meta", {}).get("llmrelay default transport", "?")
    m["llmrelay default transport"] = transport
    lines += _table(["what", "value"], [[k, f"`{x}`"] for k, x in {**m, **v}.items()])
    lines += ["## Targets", ""]
    lines += _table(["target", "wanted", "measured", "met"], targets(res))
    if seq:
        base, bare = seq.get(BASE, {}), seq.get(FLOOR, {})
        lines += [
            "## Sequential requests (one at a time)",
            "",
            "The floor is the bare asyncio client (a hand-written keep-alive HTTP/1.1",
            "client on asyncio's protocol API): every client's CPU and p50 over it.",
            "",
        ]
        rows = [
            [
                n,
                f(s["p50_us"]),
                f(s["p99_us"]),
                f(s["cpu_us"]),
                ratio(s["cpu_us"], bare.get("cpu_us")),
                ratio(s["p50_us"], bare.get("p50_us")),
                ratio(s["cpu_us"], base.get("cpu_us")),
                f(s["n"]),
            ]
            for n, s in seq.items()
        ]
        lines += _table(
            [
                "client",
                "p50 µs",
                "p99 µs",
                "client CPU µs/req",
                "CPU ÷ bare (floor)",
                "p50 ÷ bare (floor)",
                "CPU ÷ httpx",
                "requests",
            ],
            rows,
        )
    for level, block in res.get("concurrent", {}).items():
        base, floor = block.get(BASE, {}), block.get(FLOOR, {})
        lines += [f"## {level} concurrent", ""]
        rows = [
            [
                n,
                f(s["rps"]),
                ratio(s["rps"], floor.get("rps")),
                ratio(s["rps"], base.get("rps")),
                f(s["p50_us"]),
                f(s["p99_us"]),
                f(s["p99_us"] - floor.get("p99_us", 0)) if floor else "-",
                f(s["cpu_us"]),
            ]
            for n, s in block.items()
        ]
        lines += _table(
            [
                "client",
                "req/s",
                "req/s ÷ bare (floor)",
                "req/s ÷ httpx",
                "p50 µs",
                "p99 µs",
                "added p99 µs (vs bare)",
                "client CPU µs/req",
            ],
            rows,
        )
    if res.get("streaming"):
        lines += ["## Streaming (sequential; 12 content chunks per reply)", ""]
        rows = [
            [
                n,
                f(s["ttfc_p50_us"]),
                f(s["ttfc_p99_us"]),
                f(s["total_p50_us"]),
                f(s["total_p99_us"]),
            ]
            for n, s in res["streaming"].items()
        ]
        lines += _table(
            ["client", "first chunk p50 µs", "first chunk p99 µs", "total p50 µs", "total p99 µs"],
            rows,
        )
    if res.get("cache"):
        lite = res["cache"].get("LiteLLM (in-memory cache)", {}).get("p50_us")
        lines += ["## Cache hits (sequential, same request; the server saw none of them)", ""]
        rows = [
            [
                n,
                f(s["p50_us"], 1),
                f(s["p99_us"], 1),
                f(s["cpu_us"], 1),
                ratio(lite, s["p50_us"]) if lite else "-",
            ]
            for n, s in res["cache"].items()
        ]
        lines += _table(
            ["path", "p50 µs", "p99 µs", "client CPU µs/hit", "LiteLLM p50 ÷ this"], rows
        )
    if res.get("imports") or res.get("rss"):
        lines += [
            "## Import time and memory",
            "",
            "Import: best of several fresh interpreters, timing only `import X`.",
            "RSS after requests: a fresh process that imports the client, makes the",
            "requests (16 in flight) and reads /proc/self/statm.",
            "",
        ]
        imp = res.get("imports", {})
        lines += _table(
            ["module", "import ms", "RSS after import MB"],
            [[n, f(s["import_ms"], 1), f(s["rss_mb"], 1)] for n, s in imp.items()],
        )
        lines += _table(
            ["client", "RSS after import + client MB", "RSS after requests MB", "requests"],
            [
                [n, f(s["rss_import_mb"], 1), f(s["rss_mb"], 1), f(s["requests"])]
                for n, s in res.get("rss", {}).items()
            ],
        )
    lines += _scale(res)
    lines += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in plots] + [""]
    notes = HERE / "notes.md"
    if notes.exists() and not res.get("meta", {}).get("smoke"):
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


def _scale(res: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    sc = res.get("scale_concurrency", {})
    if sc:
        lines += [
            "## llmrelay: overhead vs concurrency",
            "",
            "Added = llmrelay minus the bare asyncio client at the same concurrency.",
            "",
        ]
        rows = []
        for level, block in sc.items():
            floor = block.get(FLOOR, {})
            for n, s in block.items():
                if n.startswith("llmrelay"):
                    rows.append(
                        [
                            level,
                            n,
                            f(s["rps"]),
                            f(floor.get("rps")),
                            f(s["p50_us"]),
                            f(s["p50_us"] - floor.get("p50_us", 0)),
                            f(s["cpu_us"]),
                            f(s["cpu_us"] - floor.get("cpu_us", 0)),
                        ]
                    )
        lines += _table(
            [
                "in flight",
                "client",
                "req/s",
                "bare req/s",
                "p50 µs",
                "added p50 µs",
                "CPU µs/req",
                "added CPU µs/req",
            ],
            rows,
        )
    if res.get("scale_cache"):
        lines += [
            "## llmrelay: memory-hit latency vs cache size",
            "",
            "The hot request's `achat` hit, and `get_memory` of random filler keys",
            "(200-byte values) straight on the service's cache.",
            "",
        ]
        rows = [
            [
                f(int(k)),
                f(s["entries"]),
                f(s["p50_us"], 1),
                f(s["p99_us"], 1),
                f(s["random_get_memory_ns"]),
                f(s["rss_mb"]),
            ]
            for k, s in res["scale_cache"].items()
        ]
        lines += _table(
            [
                "entries",
                "in memory tier",
                "achat hit p50 µs",
                "achat hit p99 µs",
                "random get_memory ns",
                "process RSS MB",
            ],
            rows,
        )
    if res.get("scale_deployments"):
        lines += [
            "## llmrelay: overhead vs number of deployments",
            "",
            "Sequential; N identical deployments serve the bare model name.",
            "",
        ]
        rows = [
            [
                k,
                f(s["p50_us"]),
                f(s["p99_us"]),
                f(s["cpu_us"]),
                f(s["added_p50_us"]),
                f(s["added_cpu_us"]),
            ]
            for k, s in res["scale_deployments"].items()
        ]
        lines += _table(
            [
                "deployments",
                "p50 µs",
                "p99 µs",
                "CPU µs/req",
                "added p50 µs (vs bare)",
                "added CPU µs/req",
            ],
            rows,
        )
    if res.get("rate_limit"):
        lines += [
            "## llmrelay: rate-limit precision at saturation",
            "",
            "128 callers against one deployment with a RateLimitConfig; allowed =",
            "burst + rate x window; admitted = what the server received.",
            "",
        ]
        rows = [
            [
                f(r["configured_rps"]),
                f(r["burst"]),
                f(r["window_s"], 2),
                f(r["admitted"]),
                f(r["allowed"]),
                f"{r['ratio']:.3f}",
            ]
            for r in res["rate_limit"]
        ]
        lines += _table(
            ["configured req/s", "burst", "window s", "admitted", "allowed", "admitted ÷ allowed"],
            rows,
        )
    return lines


def write(res: dict[str, Any], out: Path) -> None:
    import json

    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    (plots_dir / "results.json").write_text(json.dumps(res, indent=1))
    try:
        import plots
    except ImportError:  # matplotlib missing: tables only
        names: list[str] = []
    else:
        names = plots.draw(res, plots_dir)
    (out / "benchmarks.md").write_text(markdown(res, names))
