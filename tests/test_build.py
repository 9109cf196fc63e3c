"""The build set-up: `make wheel` gives one abi3 wheel in dist/ (issue 10, item 4).

Building a wheel takes minutes, so the suite checks the recipe (a dry run of the
target) and the settings that make the wheel abi3; the wheel itself was checked
by hand in fresh venvs without cargo (docs/decisions.md).
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_wheel_builds_a_release_wheel_into_dist(tmp_path: Path) -> None:
    stamp = tmp_path / "stamp"
    stamp.touch()  # newer than pyproject.toml: the dry run skips the venv set-up
    r = subprocess.run(
        ["make", "-n", "wheel", f"STAMP={stamp}", "BIN=/venv/bin"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "/venv/bin/maturin build --release -o dist" in r.stdout
    listed = subprocess.run(
        ["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "wheel" in listed and "no cargo" in listed


def test_the_wheel_is_abi3_and_stripped() -> None:
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert "abi3-py311" in cargo["dependencies"]["pyo3"]["features"]
    release = cargo["profile"]["release"]
    assert release["strip"] == "symbols"
    assert release["lto"] == "thin"  # off costs the core's hot path up to 2x (decisions.md)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["maturin"]["features"] == ["python"]
