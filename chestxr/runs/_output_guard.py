"""The one place that decides whether chestxr may write an output where the user asked (issue 24.3).

Nothing chestxr writes may delete or overwrite a run folder, a manifest or an input. :func:`guard_output` is
called with the output path (``--out``, an export file and its sidecar, a cache folder) and what the command
reads, before anything is written (every subcommand: train, evaluate, predict, predict --dicomweb, listen, card,
export, demo, cache build, manifest convert/split), and refuses with one line (:class:`~chestxr.core.errors.ProtectedPathError`,
exit 2) when the output

* is, or is inside, a run folder (any folder holding model.json or model.safetensors, whichever command it
  belongs to: ``export --out RUN/model.safetensors`` replaced the weights, ``--out RUN/model`` wrote its sidecar
  over RUN/model.json, ``predict --out RUN/last --overwrite`` replaced the state --resume needs);
* is, or is inside, a protected path the command names (its run folder, manifests, input files and folders; the
  folders a manifest's images lie in are protected from being replaced, not from holding a new output);
* already exists and holds any of them: an output folder is replaced as a whole (``--overwrite``), so
  ``export --format monai-bundle --out RUN --overwrite`` or ``predict --dicomweb --out PARENT --overwrite`` would
  delete what is inside. Run folders are found by walking the existing output folder (symlinks not followed:
  replacing a folder never deletes through a link).

Paths are compared after resolving symlinks and ``..``, so another spelling of the same folder is the same
folder. ``train --resume`` writes into its own run folder by design: it passes ``own_run``; so does
``demo --overwrite`` for the run inside a previous demo folder (marked by :data:`DEMO_MARKER`), which it replaces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from chestxr.core import ProtectedPathError
from chestxr.runs._folder import RUN_FOLDER_MARKERS as RUN_MARKERS

#: the file marking a folder ``chestxr demo`` made (everything in it is the demo's own)
DEMO_MARKER = ".chestxr-demo"
#: a walk of an existing output folder for run folders stops after this many entries (then refuses: a folder
#: that large is not a previous chestxr output)
MAX_WALK_ENTRIES = 200_000


@dataclass(frozen=True)
class Protected:
    """A path the command reads and must not touch; ``what`` names it in the message ("the run folder",
    "the manifest", "an input"). ``nested_ok``: an output inside it is allowed (it cannot delete anything there;
    used for the folders a manifest's images lie in, which may hold the manifest and its outputs too)."""

    path: Path
    what: str
    nested_ok: bool = False


def _resolve(path: str | os.PathLike) -> Path:
    """Absolute, symlinks and ``..`` resolved, for existing and not-yet-existing paths alike."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _is_run(folder: Path) -> bool:
    return any((folder / m).is_file() for m in RUN_MARKERS)


def run_folder_at_or_above(path: str | os.PathLike) -> Optional[Path]:
    """The run folder ``path`` is or lies inside (the nearest), or None."""
    p = _resolve(path)
    for folder in (p, *p.parents):
        if folder.is_dir() and _is_run(folder):
            return folder
    return None


def _run_folder_below(folder: Path, skip: Optional[Path] = None) -> Optional[Path]:
    """A run folder strictly inside ``folder`` (symlinks not followed; ``skip`` and what is inside it are
    passed over), or None."""
    seen = 0
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_WALK_ENTRIES:
                return current  # too large to be a previous chestxr output: refuse rather than guess
            if entry.is_dir(follow_symlinks=False):
                sub = Path(entry.path)
                if skip is not None and sub == skip:
                    continue
                if _is_run(sub):
                    return sub
                stack.append(sub)
    return None


def protected_inputs(
    *,
    run: Optional[str | os.PathLike] = None,
    manifests: Iterable[Optional[str | os.PathLike]] = (),
    inputs: Iterable[Optional[str | os.PathLike]] = (),
    image_paths: Iterable[str | os.PathLike] = (),
) -> list[Protected]:
    """The usual protected list: the run folder, manifests, named inputs, and the folders of ``image_paths``
    (images a manifest lists: only their distinct folders are resolved, so a million rows stay cheap)."""
    out: list[Protected] = []
    if run is not None:
        out.append(Protected(_resolve(run), "the run folder"))
    out += [Protected(_resolve(m), "the input manifest") for m in manifests if m]
    out += [Protected(_resolve(i), "an input") for i in inputs if i]
    folders = {os.path.dirname(os.path.abspath(os.fspath(p))) for p in image_paths}
    out += [Protected(_resolve(f), "a folder of the manifest's images", nested_ok=True) for f in sorted(folders)]
    return out


def guard_output(
    out: str | os.PathLike,
    protected: Iterable[Protected] = (),
    *,
    option: str = "--out",
    own_run: Optional[str | os.PathLike] = None,
) -> Path:
    """Refuse (ProtectedPathError) an output at ``out`` that could delete or overwrite a run folder or anything in
    ``protected`` (see the module docstring); returns ``out`` resolved. ``own_run``: a run folder the command
    writes into by design (``train --resume``)."""
    target = _resolve(out)
    own = _resolve(own_run) if own_run is not None else None
    shown = os.fspath(out)

    def refuse(reason: str) -> ProtectedPathError:
        return ProtectedPathError(
            f"{option} {shown}: {reason}; chestxr never writes over or into it. Choose an {option} outside it "
            "(e.g. beside it)"
        )

    run = run_folder_at_or_above(target)
    if run is not None and run != own:
        where = "is the run folder" if run == target else f"is inside the run folder {run}"
        raise refuse(where)
    for item in protected:
        p = _resolve(item.path)
        if own is not None and p == own:
            continue
        if target == p:
            raise refuse(f"is {item.what}")
        if not item.nested_ok and _inside(target, p):
            raise refuse(f"is inside {item.what} {p}")
        if p.parent != p and _inside(p, target) and target.exists():
            raise refuse(f"holds {item.what} {p}, which replacing it would delete")
    if target.is_dir() and target != own:
        below = _run_folder_below(target, skip=own)
        if below is not None:
            raise refuse(f"holds the run folder {below}, which replacing it would delete")
    return target


def output_refusal(
    out: str | os.PathLike,
    protected: Iterable[Protected] = (),
    *,
    option: str = "--out",
    own_run: Optional[str | os.PathLike] = None,
) -> Optional[str]:
    """The one-line reason :func:`guard_output` would refuse ``out`` for, or None."""
    try:
        guard_output(out, protected, option=option, own_run=own_run)
    except ProtectedPathError as exc:
        return str(exc)
    return None


def refuse_run_folder(path: Path) -> Optional[str]:
    """The ``refuse`` of :func:`chestxr.core.staged_output_dir`: the reason ``path`` may not be an output folder
    (:func:`guard_output` with nothing else protected: a run folder, inside one, or holding one), else None."""
    return output_refusal(path)


def guard_run_output(
    out: str | os.PathLike,
    run: Optional[str | os.PathLike] = None,
    *,
    manifests: Iterable[Optional[str | os.PathLike]] = (),
    inputs: Iterable[Optional[str | os.PathLike]] = (),
    option: str = "--out",
) -> Path:
    """:func:`guard_output` for a command reading ``run``, ``manifests`` and ``inputs``: also the folders of the
    images the manifests list, looked up only when ``out`` already exists (only then could replacing it delete
    them; an unreadable manifest is left to the command, which refuses it with its rows)."""
    from chestxr.data import read_manifest

    named = [m for m in manifests if m]
    images: list[str] = []
    if named and Path(out).exists():
        import warnings

        for m in named:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the command reads it again and warns once
                    images += [str(p) for p in read_manifest(os.fspath(m), check_paths=False).frame["path"]]
            except Exception:  # noqa: BLE001 - the workflow reports a bad manifest itself
                continue
    protected = protected_inputs(run=run, manifests=named, inputs=inputs, image_paths=images)
    return guard_output(out, protected, option=option)
