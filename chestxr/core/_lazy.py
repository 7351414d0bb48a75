"""Lazy public faces: a floor's ``__init__`` that imports its implementation modules on first use.

A floor whose modules import torch (imaging, modeling, reporting, runs) or optional libraries (pacs) keeps
``import chestxr.<floor>`` cheap this way. The face lists its API twice, checked against each other by
tests/test_layout.py: ``__all__``, and imports under ``if TYPE_CHECKING:`` (what type checkers and readers
see, and where :func:`lazy_face` looks each name up)::

    from typing import TYPE_CHECKING
    from chestxr.core import lazy_face

    if TYPE_CHECKING:
        from chestxr.runs._run import Run, load_run

    __all__ = ["Run", "load_run"]
    __getattr__, __dir__ = lazy_face(__name__, __file__, __all__)
"""

from __future__ import annotations

import ast
import importlib
import sys
from functools import lru_cache
from typing import Any, Callable, Sequence


@lru_cache(maxsize=None)
def face_imports(path: str) -> dict[str, str]:
    """{name: module} of the ``from M import name`` statements under ``if TYPE_CHECKING:`` in ``path``."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    out.update({a.asname or a.name: stmt.module for a in stmt.names})
    return out


def lazy_face(module: str, path: str, exported: Sequence[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for the face ``module`` (its file ``path``) exporting ``exported``."""

    def __getattr__(name: str) -> Any:
        where = face_imports(path).get(name) if name in exported else None
        if where is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where), name)
        setattr(sys.modules[module], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(exported)

    return __getattr__, __dir__
