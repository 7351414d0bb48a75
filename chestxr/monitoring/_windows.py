"""Windows of the inference log: a fixed count of images (``500``) or a span of time (``7d``).

Each window is tested against the reference once, at its stated false-alarm rate. Count windows are
consecutive blocks of that many images in time order; time windows are consecutive spans starting at
UTC midnight of the first image's day (empty spans have no window). The last window is ``partial``
when it holds fewer images than the count or its span has not ended at the last logged image: its
tests are as valid as any other's (they hold at every size), only less powerful.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from chestxr.monitoring._sample import MonitorError

_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}
_SPEC = re.compile(r"^\s*(\d+)\s*([hdw]?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class WindowSpec:
    """``count`` images per window, or ``seconds`` of time per window (exactly one is set)."""

    count: int | None = None
    seconds: int | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.seconds is None):
            raise MonitorError("a window is either a count of images or a span of time, not both or neither")
        if self.count is not None and self.count < 2:
            raise MonitorError(f"--window: a window needs at least 2 images, got {self.count}")
        if self.seconds is not None and self.seconds < 3600:
            raise MonitorError(f"--window: a time window must be at least 1h, got {self.seconds} s")

    def describe(self) -> str:
        if self.count is not None:
            return f"{self.count} images"
        s = int(self.seconds or 0)
        for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600)):
            if s % size == 0:
                return f"{s // size}{unit}"
        return f"{s} s"  # pragma: no cover - parse_window only makes whole hours

    @property
    def is_time(self) -> bool:
        return self.seconds is not None


def parse_window(text: str | int) -> WindowSpec:
    """``"500"`` -> 500 images; ``"7d"`` / ``"12h"`` / ``"2w"`` -> a span of time. Anything else is a
    :class:`MonitorError` saying what is accepted."""
    if isinstance(text, int):
        return WindowSpec(count=text)
    m = _SPEC.match(str(text))
    if not m:
        raise MonitorError(f"--window {text!r}: give a number of images (500) or a span (7d, 12h, 2w)")
    value, unit = int(m.group(1)), m.group(2).lower()
    if value <= 0:
        raise MonitorError(f"--window {text!r}: must be positive")
    return WindowSpec(count=value) if not unit else WindowSpec(seconds=value * _UNITS[unit])


@dataclass(frozen=True)
class Window:
    """Rows ``start:stop`` of the time-ordered log; ``begins``/``ends`` its time span (datetime64[ms],
    or None without times: count windows of a log without times)."""

    index: int
    start: int
    stop: int
    begins: np.datetime64 | None
    ends: np.datetime64 | None
    partial: bool

    @property
    def size(self) -> int:
        return self.stop - self.start


def split_windows(time: np.ndarray | None, n: int, spec: WindowSpec) -> list[Window]:
    """The windows of a log of ``n`` images already in time order (``time`` (n,) datetime64 or None)."""
    if n == 0:
        return []
    t = None if time is None else np.asarray(time).astype("datetime64[ms]")
    if t is not None and t.size > 1 and (np.diff(t.astype(np.int64)) < 0).any():
        raise MonitorError("the log must be in time order before it is split into windows")
    out: list[Window] = []
    if spec.count is not None:
        c = spec.count
        for k, start in enumerate(range(0, n, c)):
            stop = min(n, start + c)
            begins = None if t is None else t[start]
            ends = None if t is None else t[stop - 1]
            out.append(Window(k, start, stop, begins, ends, partial=stop - start < c))
        return out
    if t is None:
        raise MonitorError("a time window (e.g. 7d) needs the time of each logged image; this log has none")
    span = np.timedelta64(int(spec.seconds or 0) * 1000, "ms")
    origin = t[0].astype("datetime64[D]").astype("datetime64[ms]")
    bins = ((t - origin) // span).astype(np.int64)
    edges = np.flatnonzero(np.diff(bins)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [n]])
    for k, (a, b) in enumerate(zip(starts, stops)):
        begins = origin + bins[a] * span
        ends = begins + span
        out.append(
            Window(k, int(a), int(b), begins, ends, partial=bool(b == n and ends > t[-1] + np.timedelta64(1, "ms")))
        )
    return out
