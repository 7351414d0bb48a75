#!/usr/bin/env python
"""Walk ``train(config)`` and ``read_manifest(path)`` as a reader would, call by call, and count the modules.

A reader follows each chestxr function the first time it is called (``sys.setprofile`` call events of
functions whose file is under chestxr/, each code object counted once, in call order); the walk is the
sequence of their modules with consecutive repeats collapsed. Printed per walk:

* ``modules entered``: distinct chestxr modules on the walk;
* ``returns``: steps that come back to a module the walk had already left (and the modules returned to
  most often);
* the walk itself with ``-v``.

Usage (from a checkout, any version of the layout)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/layout_walk.py [-v]

It makes a 60-image synthetic dataset in a temporary folder and trains the tests' tiny recipe (32 px,
one epoch, no DataLoader workers), so it takes a few seconds and touches nothing else.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("CHESTXR_NO_PROGRESS", "1")


def walk(fn, *args, **kwargs) -> list[str]:
    import chestxr

    root = str(Path(chestxr.__file__).resolve().parent) + os.sep
    seen: set[object] = set()
    order: list[str] = []

    def prof(frame, event, arg):  # noqa: ANN001
        if event != "call":
            return
        code = frame.f_code
        if code in seen or not code.co_filename.startswith(root):
            return
        seen.add(code)
        rel = code.co_filename[len(root) :]
        module = "chestxr." + rel[: -len(".py")].replace(os.sep, ".")
        module = module[: -len(".__init__")] if module.endswith(".__init__") else module
        if not order or order[-1] != module:
            order.append(module)

    sys.setprofile(prof)
    try:
        fn(*args, **kwargs)
    finally:
        sys.setprofile(None)
    return order


def summary(name: str, order: list[str], verbose: bool) -> None:
    visited: set[str] = set()
    returns: collections.Counter[str] = collections.Counter()
    for i, m in enumerate(order):
        if m in visited and i and order[i - 1] != m:
            returns[m] += 1
        visited.add(m)
    top = ", ".join(f"{m.rsplit('.', 1)[-1]} {n}" for m, n in returns.most_common(5))
    print(f"{name}: modules entered {len(visited)}, returns to a module already left {sum(returns.values())} ({top})")
    if verbose:
        print("  " + " -> ".join(m.replace("chestxr.", "") for m in order))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="print each walk")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    import chestxr

    with tempfile.TemporaryDirectory() as tmp:
        try:  # since the layout refactor the data floor's face has it; before, the top level did
            from chestxr.data import generate_synthetic_dataset
        except ImportError:
            generate_synthetic_dataset = chestxr.generate_synthetic_dataset

        manifest = generate_synthetic_dataset(Path(tmp) / "data", n_images=60, seed=1, size=48, with_split=True)
        overrides = [
            "model.backbone=tiny", "preprocessing.size=32", "preprocessing.cache_size=48", "data.num_workers=0",
            "train.batch_size=16", "train.epochs=1", f"data.manifest={manifest}",
        ]  # fmt: skip
        config = chestxr.load_config(None, overrides)
        summary("read_manifest(path)", walk(chestxr.read_manifest, manifest), args.verbose)
        summary(
            "train(config)",
            walk(chestxr.train, config, out_dir=Path(tmp) / "run", log=lambda s: None),
            args.verbose,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
