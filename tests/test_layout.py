"""The source layout holds (issue 11.4): no import cycles between Python modules (a
function-level import counts), none between Rust modules, and no ``#[path]`` sibling
files in the core (directory modules instead).

The checks read the sources (no import is executed), so they see lazy imports too.
A submodule using its own package (``from . import x`` in ``pkg/mod.py``, ``super::``
in Rust) is not an edge: the package is always loaded first.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY_ROOT = ROOT / "python"
RUST_ROOT = ROOT / "rust"


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def python_import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere (top level or in a function;
    ``if TYPE_CHECKING:`` blocks excluded, they never run)."""
    mods: dict[str, tuple[Path, bool]] = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (p, is_pkg)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (p, is_pkg) in mods.items():

        def add(target: str, m: str = m) -> None:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                t = ".".join(parts[:i])
                if t in mods and t != m and not m.startswith(t + "."):
                    graph[m].add(t)

        for node in _runtime_nodes(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                for a in node.names:
                    add(a.name)
            elif isinstance(node, ast.ImportFrom):
                base_parts = m.split(".") if is_pkg else m.split(".")[:-1]
                if node.level:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for a in node.names:
                    add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
    return graph


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield node
        yield from _runtime_nodes(node)


_RUST_PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")


def rust_module_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the crate modules its code names (``crate::x``, ``super::x``); a module
    and its own ancestors or descendants are not edges."""
    mods: dict[str, Path] = {}
    for p in root.rglob("*.rs"):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts == ["lib"]:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        mods["::".join(["crate", *parts])] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        src = re.sub(r"//[^\n]*", "", p.read_text())
        for base, rest in _RUST_PATH.findall(src):
            segs = rest.split("::")[1:]
            if base == "crate":
                cur = ["crate"]
            else:
                cur = m.split("::")[:-1]
                while segs and segs[0] == "super":
                    cur, segs = cur[:-1], segs[1:]
            path = cur + segs
            for i in range(len(path), 0, -1):
                t = "::".join(path[:i])
                if t in mods:
                    if t != m and not m.startswith(t + "::") and not t.startswith(m + "::"):
                        graph[m].add(t)
                    break
    return graph


def test_no_python_import_cycles() -> None:
    graph = python_import_graph(PY_ROOT)
    assert graph.get("llmrelay._engine")
    assert _sccs(graph) == []


def test_no_rust_module_cycles() -> None:
    graph = rust_module_graph(RUST_ROOT)
    assert graph.get("crate::gate")
    assert _sccs(graph) == []


def test_no_path_attributes_in_the_core() -> None:
    offenders = [
        str(p.relative_to(ROOT)) for p in RUST_ROOT.rglob("*.rs") if "#[path" in p.read_text()
    ]
    assert offenders == []


@pytest.mark.parametrize("lazy", [False, True])
def test_the_python_check_finds_a_cycle(tmp_path: Path, lazy: bool) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    body = "def f():\n    from pkg import a\n" if lazy else "from . import a\n"
    (pkg / "b.py").write_text(body + "x = 1\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    assert _sccs(python_import_graph(tmp_path)) == [["pkg.a", "pkg.b"]]


def test_the_rust_check_finds_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "lib.rs").write_text("mod a;\nmod b;\n")
    (tmp_path / "a.rs").write_text("use crate::b::B;\npub struct A;\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mod.rs").write_text("use super::a::A;\npub struct B;\nmod c;\n")
    (tmp_path / "b" / "c.rs").write_text("use super::B; // a child naming its parent\n")
    assert _sccs(rust_module_graph(tmp_path)) == [["crate::a", "crate::b"]]


def test_the_version_has_one_owner() -> None:
    """Cargo.toml says the version; the wheel's metadata and ``__version__`` follow it."""
    import importlib.metadata
    import tomllib

    import llmrelay

    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert llmrelay.__version__ == cargo == importlib.metadata.version("llmrelay")
    literal = re.compile(r"""__version__\s*(?::\s*str\s*)?=\s*["']""")
    assert not [p for p in PY_ROOT.rglob("*.py") if literal.search(p.read_text())]
