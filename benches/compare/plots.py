"""PNG plots of the comparison (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DPI = 110


def _latency(res: dict[str, Any], path: Path) -> bool:
    seq = res.get("sequential", {})
    if not seq:
        return False
    names = list(seq)
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(names) + 1.8))
    ax.boxplot(
        [seq[n]["lat_us"] for n in names],
        vert=False,
        whis=(1, 99),
        showfliers=False,
        widths=0.6,
    )
    ax.set_yticks(range(1, len(names) + 1), names)
    ax.set_xscale("log")
    ax.set_xlabel("latency per sequential request, µs (log; box = p25-p75, whiskers = p1-p99)")
    ax.set_title("Sequential chat latency per client (loopback fake server)")
    for i, n in enumerate(names, start=1):
        ax.annotate(
            f"p50 {seq[n]['p50_us']:,.0f} µs · CPU {seq[n]['cpu_us']:,.0f} µs",
            (seq[n]["p99_us"], i),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def _throughput(res: dict[str, Any], path: Path) -> bool:
    sc, conc = res.get("scale_concurrency", {}), res.get("concurrent", {})
    if not sc and not conc:
        return False
    fig, ax = plt.subplots(figsize=(9, 5.2))
    series: dict[str, dict[int, float]] = {}
    for src in (sc, conc):  # the interleaved comparison wins where both measured a level
        for level, block in src.items():
            for n, s in block.items():
                series.setdefault(n, {})[int(level)] = s["rps"]
    for n, pts in series.items():
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", label=n)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("requests in flight")
    ax.set_ylabel("requests / s (one client core)")
    ax.set_title("Throughput vs concurrency")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def _cache_size(res: dict[str, Any], path: Path) -> bool:
    sc = res.get("scale_cache", {})
    if not sc:
        return False
    xs = [int(k) for k in sc]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    a1.plot(xs, [s["p50_us"] for s in sc.values()], marker="o", label="p50")
    a1.plot(xs, [s["p99_us"] for s in sc.values()], marker="o", label="p99")
    a1.set_title("achat memory hit (hot key)")
    a1.set_ylabel("µs")
    a2.plot(xs, [s["random_get_memory_ns"] for s in sc.values()], marker="o", color="C2")
    a2.set_title("get_memory of random keys")
    a2.set_ylabel("ns per lookup")
    for a in (a1, a2):
        a.set_xscale("log")
        a.set_xlabel("entries in the memory tier")
        a.set_ylim(bottom=0)
        a.grid(which="both", alpha=0.3)
    a1.legend()
    fig.suptitle("llmrelay: overhead vs cache size")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def _deployments(res: dict[str, Any], path: Path) -> bool:
    sd = res.get("scale_deployments", {})
    if not sd:
        return False
    xs = [int(k) for k in sd]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(xs, [s["added_cpu_us"] for s in sd.values()], marker="o", label="added CPU µs/req")
    ax.plot(xs, [s["added_p50_us"] for s in sd.values()], marker="o", label="added p50 µs")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("deployments serving the model")
    ax.set_ylabel("µs over the bare asyncio client")
    ax.set_ylim(bottom=0)
    ax.set_title("llmrelay: overhead vs number of deployments (sequential)")
    ax.grid(which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def draw(res: dict[str, Any], out: Path) -> list[str]:
    """Draw every plot the results allow; returns the file names written."""
    names = []
    for name, fn in (
        ("latency_sequential.png", _latency),
        ("throughput_vs_concurrency.png", _throughput),
        ("overhead_vs_cache_size.png", _cache_size),
        ("overhead_vs_deployments.png", _deployments),
    ):
        if fn(res, out / name):
            names.append(name)
    return names
