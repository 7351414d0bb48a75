"""The package's floors (README, Layout): no import cycles, imports only downward, every package a
regular package (so a wheel ships it). Imports are read as text (ast), module-level and inside
functions alike: an import moved into a function to dodge a cycle is still a dependency."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "chestxr"
#: bottom to top; a module may import its own floor and the floors below it.
FLOORS = ["core", "data", "imaging", "modeling", "evaluation", "reporting", "runs", "monitoring", "pacs", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The chestxr modules ``path`` imports (``from a import b`` counts a and a.b when a.b is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m in known and m != name and m != "chestxr"}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {m: imports_of(p, known) for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_imports_flow_downward_only():
    upward = []
    for module, deps in import_graph().items():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] not in FLOORS:  # chestxr/__init__, __main__, calibration (public paths)
            continue
        mine = FLOORS.index(parts[1])
        for dep in deps:
            floor = dep.split(".")[1] if dep.count(".") else None
            if floor in FLOORS and FLOORS.index(floor) > mine:
                upward.append(f"{module} -> {dep}")
    assert upward == []


def test_every_floor_is_a_regular_package():
    floors = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert floors - {"__pycache__"} == set(FLOORS)
    for folder in {p.parent for p in PACKAGE.rglob("*.py")}:
        assert (folder / "__init__.py").is_file(), f"{folder} has modules but no __init__.py"
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "chestxr"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    if not tracked:
        pytest.skip("not a git checkout")
    missing = [f"chestxr/{f}/__init__.py" for f in FLOORS if f"chestxr/{f}/__init__.py" not in tracked]
    assert missing == [], "untracked (ignored?) package files: a wheel would lack these packages"
