"""Config presets: the YAML files of the repository's configs/ folder (installed as the package
``chestxr.presets`` by a wheel or sdist), listed with a one-line description each (``chestxr presets``).

Lookup order: ./configs in the working directory (a user's own copies), the installed
``chestxr.presets`` package, then the repository's configs/ beside the package (a source checkout run
without installing, or an editable install: setuptools maps ``chestxr.presets`` only
in a built wheel or sdist). A preset's description is its first comment line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chestxr.core._errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """A named YAML preset: ``name`` (file stem), ``description`` (its first comment line), ``source``
    (where it was found: a configs/ folder or the installed ``chestxr.presets`` package)."""

    name: str
    description: str
    source: str
    text: str


def _preset_dirs() -> list[Any]:
    """Where presets are looked up, in order: ./configs (a user's own copies), the installed
    ``chestxr.presets`` package (the repository's configs/ folder, shipped in the wheel), and the
    repository's configs/ beside the package (a source checkout run without installing).
    Entries are ``pathlib.Path`` or ``importlib.resources`` Traversable objects."""
    from importlib import resources

    dirs: list[Any] = []
    cwd = Path.cwd() / "configs"
    if cwd.is_dir():
        dirs.append(cwd)
    try:
        dirs.append(resources.files("chestxr.presets"))
    except ModuleNotFoundError:  # source tree on PYTHONPATH: chestxr.presets is only made by installing
        pass
    repo = Path(__file__).resolve().parents[2] / "configs"
    if repo.is_dir() and all(str(repo) != str(d) for d in dirs):
        dirs.append(repo)
    return dirs


def _yaml_files(folder: Any) -> list[Any]:
    try:
        return sorted((x for x in folder.iterdir() if x.name.endswith(".yaml") and x.is_file()), key=lambda x: x.name)
    except (OSError, FileNotFoundError, NotADirectoryError):
        return []


def _description(text: str) -> str:
    """A preset's first comment line (its one-line summary), without the ``#``."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line:
            break
    return ""


def list_presets() -> list[Preset]:
    """Every preset name once (the first folder of :func:`_preset_dirs` that has it wins), sorted."""
    seen: dict[str, Preset] = {}
    for folder in _preset_dirs():
        for f in _yaml_files(folder):
            name = f.name[: -len(".yaml")]
            if name not in seen:
                text = f.read_text(encoding="utf-8")
                seen[name] = Preset(name=name, description=_description(text), source=str(folder), text=text)
    return [seen[k] for k in sorted(seen)]


def find_preset(name: str) -> Preset:
    """The preset called ``name``; ConfigError listing the available ones when there is none."""
    for p in list_presets():
        if p.name == name:
            return p
    avail = [p.name for p in list_presets()]
    raise ConfigError(f"no config file or preset named {name!r}; presets: {avail} (list them with `chestxr presets`)")


def preset_path(name: str) -> Path:
    """Path of a YAML file, or of a preset (``demo``, ``nih14-densenet121``, ...) when it lives on disk."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    for folder in _preset_dirs():
        candidate = folder.joinpath(f"{name}.yaml")
        if candidate.is_file():
            return Path(str(candidate))
    find_preset(name)  # raises with the list of presets
    raise AssertionError("unreachable")  # pragma: no cover


def read_config_text(path: str) -> tuple[str, str]:
    """(where, YAML text) of a file path or a preset name."""
    p = Path(path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        try:
            return str(p), p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    preset = find_preset(path)
    return f"{preset.source}/{preset.name}.yaml", preset.text
