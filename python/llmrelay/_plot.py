"""The optional PNG of a file run: throughput and latency over the run (``plot`` extra).

Needs matplotlib (``pip install 'llmrelay[plot]'``); :func:`check_plot` says so before a
run starts, so a missing extra never costs a run.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmrelay.errors import InvalidRequestError

__all__ = ["check_plot", "write_plot"]


def check_plot(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, or InvalidRequestError (``field="plot"``) when matplotlib is
    missing, the name does not end in ``.png`` or its directory does not exist."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise InvalidRequestError(f"plot={str(out)!r}: expected a .png file name", field="plot")
    if not out.parent.is_dir():
        raise InvalidRequestError(f"plot={str(out)!r}: its directory does not exist", field="plot")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InvalidRequestError(
            "plot: needs matplotlib (pip install 'llmrelay[plot]')", field="plot"
        ) from None
    return out


def write_plot(path: Path, timeline: list[tuple[float, float, bool]], title: str) -> None:
    """Write the PNG: lines finished per second, and the latency of each answer not
    served from the cache, over the run. ``timeline`` holds (seconds since the start,
    latency in seconds, answered from the cache) per line written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    end = max((t for t, _, _ in timeline), default=0.0)
    width = max(end / 60, 1e-3)  # about 60 bars
    bins = [0] * (int(end / width) + 1)
    for t, _, _ in timeline:
        bins[int(t / width)] += 1
    top.bar(
        [i * width for i in range(len(bins))], [n / width for n in bins], width=width, align="edge"
    )
    top.set_ylabel("lines / s")
    top.set_title(title)
    called = [(t, lat * 1000) for t, lat, cached in timeline if not cached]
    if called:
        bottom.scatter([t for t, _ in called], [ms for _, ms in called], s=3)
    bottom.set_ylabel("latency (ms, not cached)")
    bottom.set_xlabel("seconds since the start")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
