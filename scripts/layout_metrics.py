#!/usr/bin/env python
"""Static layout numbers of the chestxr package (issue 21), read from the source as text (ast).

* ``fit``: lines and parameters of the training loop's ``fit`` (wherever it lives in chestxr/modeling);
* ``RunMetadata``: fields, and those annotated with a ``dict[str, Any]`` (or a list of them);
* re-exports: modules whose ``__all__`` (or ``noqa`` imports) hand on names defined in another chestxr
  module, other than a floor's ``__init__`` (its public face) and ``chestxr/__init__`` / ``chestxr/calibration``;
* private imports: ``from chestxr... import _name`` across modules, and imports of another floor's ``_module``;
* modules per floor.

Usage: ``python scripts/layout_metrics.py [PACKAGE_DIR]`` (default chestxr).
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "chestxr").resolve()
    files = sorted(root.rglob("*.py"))
    trees = {module_name(root, p): (p, ast.parse(p.read_text(encoding="utf-8"))) for p in files}
    faces = {"chestxr", "chestxr.calibration"} | {m for m, (p, _) in trees.items() if p.name == "__init__.py"}

    for m, (_p, tree) in trees.items():
        if m.startswith("chestxr.modeling"):
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef) and node.name == "fit" and node.col_offset == 0:
                    a = node.args
                    n_args = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                    print(f"fit ({m}): {node.end_lineno - node.lineno + 1} lines, {n_args} parameters "
                          f"({len(a.kwonlyargs)} keyword-only)")  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "RunMetadata":
                fields = [s for s in node.body if isinstance(s, ast.AnnAssign)]
                dicts = [ast.unparse(s.target) for s in fields if "dict[str, Any]" in ast.unparse(s.annotation)]
                print(f"RunMetadata ({m}): {len(fields)} fields, {len(dicts)} typed dict[str, Any]: {', '.join(dicts)}")

    reexports: dict[str, list[str]] = {}
    private: list[str] = []
    for m, (p, tree) in trees.items():
        defined: set[str] = set()
        imported: dict[str, str] = {}
        exported: list[str] = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        defined.add(t.id)
                        if t.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                            exported = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
        text = p.read_text(encoding="utf-8").splitlines()
        noqa: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chestxr"):
                for a in node.names:
                    imported[a.asname or a.name] = node.module or ""
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        private.append(f"{m}: from {node.module} import {a.name}")
                if "noqa" in text[node.lineno - 1] or "noqa" in text[(node.end_lineno or node.lineno) - 1]:
                    noqa += [a.asname or a.name for a in node.names]
                floor = m.split(".")[1] if m.count(".") else ""
                mod = node.module or ""
                parts = mod.split(".")
                if len(parts) > 2 and parts[2].startswith("_") and parts[1] != floor:
                    private.append(f"{m}: imports another floor's private module {mod}")
        handed = sorted({n for n in exported if n in imported and n not in defined} | set(noqa))
        if handed and m not in faces:
            reexports[m] = handed
    n_names = sum(len(v) for v in reexports.values())
    print(f"re-export modules (not a public face): {len(reexports)}, {n_names} names")
    for m, names in sorted(reexports.items()):
        print(f"  {m}: {', '.join(names)}")
    print(f"private-name imports across modules: {len(private)}")
    for line in private:
        print(f"  {line}")
    floors = Counter(m.split(".")[1] for m in trees if m.count("."))
    print("modules per floor: " + ", ".join(f"{k} {v}" for k, v in floors.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
