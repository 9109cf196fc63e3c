"""Counts of the reliability suites: CI sizes by default, soak sizes with LLMRELAY_SOAK=1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SOAK = os.environ.get("LLMRELAY_SOAK", "") not in ("", "0")


def count(ci: int, soak: int) -> int:
    """``soak`` under ``make soak``, else ``ci``."""
    return soak if SOAK else ci


def report(name: str, figures: dict[str, Any]) -> None:
    """Print measured figures and, with LLMRELAY_REPORT=<dir>, write them as JSON there."""
    print(f"\n[reliability] {name}: {json.dumps(figures, sort_keys=True)}")
    out = os.environ.get("LLMRELAY_REPORT")
    if out:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
