"""The package's floors (README, Layout): no import cycles, imports only downward, every package a
regular package (so a wheel ships it); each floor's __init__ is its public face and every other module in it
is private (_name.py); no module imports another module's private names or another floor's private modules;
the README's Layout section names every floor and module; tests/ mirrors the floors. Imports are read as text
(ast), module-level and inside functions alike: an import moved into a function to dodge a cycle is still a
dependency. A floor reserved in FLOORS but not built yet (no folder) passes."""

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
    assert floors - {"__pycache__", "templates"} <= set(FLOORS), "a folder of chestxr/ that is not a floor"
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
    missing = [f"chestxr/{f}/__init__.py" for f in built_floors() if f"chestxr/{f}/__init__.py" not in tracked]
    assert missing == [], "untracked (ignored?) package files: a wheel would lack these packages"


# ----------------------------------------------------------------------------- public faces, private modules


def built_floors() -> list[str]:
    """The floors of FLOORS that exist (a reserved floor may not be built yet)."""
    return [f for f in FLOORS if (PACKAGE / f / "__init__.py").is_file()]


def floor_modules(floor: str) -> list[Path]:
    return sorted(p for p in (PACKAGE / floor).glob("*.py") if p.name != "__init__.py")


def test_a_reserved_floor_without_a_folder_passes(tmp_path):
    assert set(built_floors()) <= set(FLOORS)
    assert "monitoring" in FLOORS and FLOORS.index("runs") < FLOORS.index("monitoring") < FLOORS.index("pacs")


def test_implementation_modules_are_private():
    public = [str(p.relative_to(ROOT)) for f in built_floors() for p in floor_modules(f) if not p.stem.startswith("_")]
    assert public == [], "a floor's modules are private (_name.py); its __init__ is the public face"
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "calibration.py"]


def _all_of(path: Path) -> list[str]:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return [e.value for e in node.value.elts]  # type: ignore[attr-defined]
    return []


@pytest.mark.parametrize("floor", FLOORS)
def test_each_face_exports_what_it_declares(floor):
    """__all__ is a literal list; every name resolves; a lazy face (``lazy_face``) lists under
    ``if TYPE_CHECKING:`` exactly the names of __all__ (what type checkers see is what it serves)."""
    import importlib

    init = PACKAGE / floor / "__init__.py"
    if not init.is_file():
        pytest.skip(f"floor {floor} not built yet")
    exported = _all_of(init)
    assert exported and len(set(exported)) == len(exported), f"chestxr.{floor}: __all__ missing or repeated"
    face = importlib.import_module(f"chestxr.{floor}")
    missing = [n for n in exported if not hasattr(face, n)]
    assert missing == [], f"chestxr.{floor} declares but cannot give {missing}"
    if "= lazy_face(__name__" in init.read_text(encoding="utf-8"):
        from chestxr.core._lazy import face_imports

        assert set(face_imports(str(init))) == set(exported)


def test_no_private_names_or_foreign_private_modules_imported():
    """No module imports another module's private (_x) names; a module imports another floor only through
    its face (``from chestxr.data import read_manifest``), never its private modules."""
    bad = []
    for path in PACKAGE.rglob("*.py"):
        me = module_name(path)
        my_floor = me.split(".")[1] if me.count(".") else None
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chestxr"):
                mod = node.module or ""
                bad += [
                    f"{me}: {mod}.{a.name}" for a in node.names if a.name.startswith("_") and a.name != "__version__"
                ]
                parts = mod.split(".")
                if len(parts) >= 3 and parts[2].startswith("_") and parts[1] != my_floor:
                    bad.append(f"{me}: imports {mod} (another floor's private module)")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    if (
                        a.name.startswith("chestxr.")
                        and len(parts) >= 3
                        and parts[2].startswith("_")
                        and parts[1] != my_floor
                    ):
                        bad.append(f"{me}: imports {a.name} (another floor's private module)")
    assert bad == []


def test_import_chestxr_and_its_faces_pull_no_torch():
    """The top level and the faces are lazy where their modules import torch: importing them is cheap."""
    import sys

    code = (
        "import sys, chestxr, chestxr.core, chestxr.data, chestxr.evaluation, chestxr.imaging, chestxr.modeling, "
        "chestxr.reporting, chestxr.runs, chestxr.pacs; assert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# ----------------------------------------------------------------------------- README and tests/


def layout_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Layout")
    end = readme.find("\n## ", start + 3)
    return readme[start : end if end > 0 else None]


def layout_entries(section: str) -> dict[str, str]:
    """``chestxr/<floor>/`` (or ``chestxr/<name>.py``) -> its text in the README's Layout block."""
    entries: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        stripped = line.strip()
        if line.startswith("    ") and stripped.startswith("chestxr/"):
            current = stripped.split()[0]
            entries[current] = stripped[len(current) :]
        elif line.startswith("    ") and stripped and not stripped.split()[0].endswith("/") and current:
            entries[current] += " " + stripped
        else:
            current = None if not line.startswith("    ") else current
    return entries


def test_readme_layout_names_every_floor_and_module():
    """Checked against the tree: every built floor has its line, naming each of its modules (a private
    ``_manifest_checks.py`` is written ``manifest_checks``); the public top-level modules are listed; no line
    names a floor or module that does not exist."""
    import re

    entries = layout_entries(layout_section())
    missing = []
    for floor in built_floors():
        text = entries.get(f"chestxr/{floor}/")
        if text is None:
            missing.append(f"chestxr/{floor}/ (the floor)")
            continue
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
        missing += [f"chestxr/{floor}/{p.name}" for p in floor_modules(floor) if p.stem.lstrip("_") not in words]
    missing += [f"chestxr/{n}" for n in ("calibration.py",) if f"chestxr/{n}" not in entries]
    assert missing == [], "README, Layout: add these (one line per floor, each module by its concept)"
    stale = [k for k in entries if not (ROOT / k).exists()]
    assert stale == [], f"README, Layout names what the tree does not have: {stale}"


def test_readme_layout_check_fails_on_a_missing_module():
    """The check above can fail: a floor line without one of its modules is reported."""
    import re

    entries = layout_entries(layout_section())
    text = entries["chestxr/data/"].replace("manifest_checks", "")
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    assert "manifest_checks" not in words and "manifest_checks" in set(
        re.findall(r"[A-Za-z_][A-Za-z0-9_]*", entries["chestxr/data/"])
    )


def test_tests_mirror_the_floors():
    """Every test module lives in the folder of its floor (tests/<floor>/), except the few that cover the
    whole repository; test file names are unique (pytest imports them by base name)."""
    tests = ROOT / "tests"
    top_level = {"test_layout.py", "test_packaging.py", "test_benchmarks.py", "test_bench_pacs.py", "test_cuda.py"}
    stray = sorted(p.name for p in tests.glob("test_*.py") if p.name not in top_level)
    assert stray == [], "put floor tests in tests/<floor>/"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders - {"__pycache__"} <= set(FLOORS), "a test folder that is not a floor"
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), "duplicate test file names"
