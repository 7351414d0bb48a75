"""Progress output that fits where it goes.

Three modes, decided per call from the environment (so DDP workers and subprocesses inherit them):

- ``"bar"``: tqdm bars on stderr, only when stderr is a terminal and ``CHESTXR_NO_PROGRESS`` is unset;
- ``"lines"``: stderr is not a terminal (CI, nohup, a log file) or ``CHESTXR_NO_PROGRESS`` is set: no
  carriage-return bars; instead one plain line per stage (``predict: 99 batches, 1584 images in 3.1 s,
  511.0 img/s``) and the training loop's one line per epoch;
- ``"quiet"``: ``CHESTXR_QUIET`` is set (``chestxr --quiet ...``): no bars, no per-epoch or per-stage
  lines; commands still print their result (the run folder, the report path) and every warning/error.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Literal, Optional

Mode = Literal["bar", "lines", "quiet"]


def progress_mode() -> Mode:
    """The current mode (see the module docstring)."""
    if os.environ.get("CHESTXR_QUIET"):
        return "quiet"
    if os.environ.get("CHESTXR_NO_PROGRESS"):
        return "lines"
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream
        tty = False
    return "bar" if tty else "lines"


def set_quiet(quiet: bool = True) -> None:
    """Turn quiet mode on (or off) for this process and the processes it starts."""
    if quiet:
        os.environ["CHESTXR_QUIET"] = "1"
    else:
        os.environ.pop("CHESTXR_QUIET", None)


def say(message: str) -> None:
    """A progress message (per epoch, per stage) on stdout; nothing in quiet mode."""
    if progress_mode() != "quiet":
        print(message, flush=True)


class Progress:
    """A progress counter: a tqdm bar in ``"bar"`` mode; otherwise it counts silently and, when
    ``summary`` is True, prints one line on close in ``"lines"`` mode (the same numbers as the bar:
    steps, items, seconds, items/s and the last postfix). ``enabled=False``: nothing at all.
    Use as a context manager."""

    def __init__(
        self, total: Optional[int], desc: str, unit: str = "batch", *, summary: bool = True, enabled: bool = True
    ) -> None:
        self.desc, self.unit, self.summary = desc, unit, summary
        self.mode: Mode = progress_mode() if enabled else "quiet"
        self.steps, self.items, self.postfix = 0, 0, ""
        self.start = time.perf_counter()
        self._bar: Any = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)

    def update(self, steps: int = 1, *, items: int = 0, **postfix: Any) -> None:
        """Advance by ``steps`` (bar units) and ``items`` (images); ``postfix`` shows next to the bar."""
        self.steps += steps
        self.items += items
        if postfix:
            self.postfix = "  ".join(f"{k} {v}" for k, v in postfix.items())
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(steps)

    def line(self) -> str:
        """The one-line summary: ``desc: N unit(s)[, M images] in S s[, R img/s][  postfix]``."""
        seconds = time.perf_counter() - self.start
        plural = self.unit if self.steps == 1 else {"batch": "batches"}.get(self.unit, self.unit + "s")
        parts = [f"{self.desc}: {self.steps} {plural}"]
        if self.items:
            parts[0] += f", {self.items} images"
        parts[0] += f" in {seconds:.1f} s"
        if self.items:
            parts.append(f"{self.items / max(seconds, 1e-9):.1f} img/s")
        text = ", ".join(parts)
        return f"{text}  {self.postfix}" if self.postfix else text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self.summary:
            print(self.line(), file=sys.stderr, flush=True)
        self.summary = False  # once

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
