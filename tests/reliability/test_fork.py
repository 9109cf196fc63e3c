"""Fork: a service built before ``os.fork`` (gunicorn --preload, a module-level service,
Celery prefork) works in every child, never touches the parent's disk-tier handle, and
closes at once there; the parent keeps its disk tier.

The scenario runs in a process of its own (tests/reliability/scripts/fork_child.py), so
the test process itself is never forked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmrelay.testing import SpawnedFake

SCRIPT = Path(__file__).parent / "scripts" / "fork_child.py"


def _run(fake: SpawnedFake, disk: Path, mode: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), fake.base_url, str(disk), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return proc.returncode, lines, proc.stderr


@pytest.mark.parametrize("mode", ["preload", "used"])
def test_service_built_before_fork_works_in_children(
    fakes: dict[str, SpawnedFake], tmp_path: Path, mode: str
) -> None:
    code, lines, stderr = _run(fakes["openai"], tmp_path / "disk", mode)
    assert code == 0, (lines, stderr[-3000:])
    children = [x for x in lines if x["who"].startswith("child")]
    parent = next(x for x in lines if x["who"] == "parent")
    assert len(children) == 2 and parent["children"] == [0, 0]
    for c in children:
        assert c["answers"] == 4
        assert c["disk"]["enabled"] is False
        assert "before fork" in c["disk"]["error"]
        assert c["close_s"] < 5.0
    # the parent's tier is untouched by its children
    assert parent["disk"]["enabled"] is True
    if mode == "used":
        assert parent["answers"] == 4
        assert parent["disk_entries"] >= 4  # what the parent answered reached its disk
    # the child says, once, what happened and what to do
    assert stderr.count("forked from the process that opened the disk cache") == 2
