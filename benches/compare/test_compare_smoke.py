"""Smoke test of the comparison harness: ``run.py --smoke`` with minimal counts.

It runs in a subprocess (the harness pins its own CPU affinity and installs an offline
network guard: neither belongs in the test process), with whichever clients this
environment has, and checks the results and the report are whole. The real run is
``make bench-compare``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parent / "run.py"


def test_harness_smoke(tmp_path: Path) -> None:
    out = tmp_path / "docs"
    raw = tmp_path / "results.json"
    args = ["--smoke", "--skip", "imports", "rss", "scale", "--out", str(out), "--json", str(raw)]
    proc = subprocess.run(
        [sys.executable, str(RUN), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(raw.read_text())
    seq = res["sequential"]
    for name in ("bare asyncio", "httpx", "llmrelay"):
        assert seq[name]["n"] > 0 and seq[name]["cpu_us"] > 0, name
        assert seq[name]["p50_us"] <= seq[name]["p99_us"]
    for block in res["concurrent"].values():
        assert all(s["rps"] > 0 for s in block.values())
    assert all(s["n"] > 0 for s in res["streaming"].values())
    # the cache paths were hits: the harness asserts the server saw none of them
    assert {"llmrelay memory tier (achat)", "llmrelay disk tier (achat)"} <= set(res["cache"])
    md = (out / "benchmarks.md").read_text()
    assert "## Sequential requests" in md and "| llmrelay |" in md
    assert "## Targets" in md
