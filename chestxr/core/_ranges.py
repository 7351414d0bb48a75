"""Allowed ranges of config values and CLI options: checked where the value enters (config loading,
model.json, argparse), so a bad value is a one-line error naming the option and its range, not a
traceback deep in training or a silently useless model.

:data:`CONFIG_RANGES` maps dotted config keys to a :class:`Range`; every float in a config must also be
finite (``train.lr=.nan`` is refused). The CLI option types in chestxr/cli/_options.py use the same
:class:`Range` objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from chestxr.core._errors import ConfigError


@dataclass(frozen=True)
class Range:
    """lo/hi bounds (None: unbounded); ``lo_open``/``hi_open`` exclude the bound itself."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            return False
        return True

    def describe(self) -> str:
        lo = None if self.lo is None else f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        hi = None if self.hi is None else f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        if self.lo is not None and self.hi is not None:
            left = "(" if self.lo_open else "["
            right = ")" if self.hi_open else "]"
            return f"in {left}{_num(self.lo)}, {_num(self.hi)}{right}"
        return lo or hi or "finite"


def _num(v: float) -> str:
    """A bound as written: integers in full (4294967295, not 4.29497e+09), other numbers with %g."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else f"{v:g}"


AT_LEAST_1 = Range(1)
AT_LEAST_0 = Range(0)
POSITIVE = Range(0, lo_open=True)
UNIT = Range(0, 1)
UNIT_HALF_OPEN = Range(0, 1, hi_open=True)
OPEN_UNIT = Range(0, 1, lo_open=True, hi_open=True)
#: random seeds: numpy's generators take 0 .. 2**32 - 1 (a negative seed used to be a traceback deep in numpy)
SEED_RANGE = Range(0, 2**32 - 1)

CONFIG_RANGES: dict[str, Range] = {
    "seed": SEED_RANGE,
    "data.val_fraction": UNIT_HALF_OPEN,
    "data.test_fraction": UNIT_HALF_OPEN,
    "data.num_workers": AT_LEAST_0,
    "preprocessing.size": Range(8),
    "preprocessing.channels": Range(1, 3),
    "preprocessing.cache_size": Range(8),
    "preprocessing.max_pixels": AT_LEAST_1,
    "augmentation.rotate_deg": Range(0, 180),
    "augmentation.translate": UNIT_HALF_OPEN,
    "augmentation.brightness": UNIT,
    "augmentation.contrast": UNIT,
    "model.dropout": UNIT_HALF_OPEN,
    "train.epochs": AT_LEAST_1,
    "train.batch_size": AT_LEAST_1,
    "train.lr": AT_LEAST_0,  # 0 is allowed: fine-tuning checks transfer with frozen weights
    "train.weight_decay": AT_LEAST_0,
    "train.momentum": UNIT_HALF_OPEN,
    "train.warmup_epochs": AT_LEAST_0,
    "train.grad_clip": POSITIVE,
    "train.early_stopping_patience": AT_LEAST_1,
    "train.ema_decay": UNIT_HALF_OPEN,
    "train.max_minutes": POSITIVE,
    "train.threads": AT_LEAST_1,
    "calibration.n_bootstrap": AT_LEAST_1,
    "calibration.ci_level": OPEN_UNIT,
}


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for x in value for v in _numbers(x)]
    return []


def check_config_value(where: str, value: Any) -> None:
    """ConfigError when ``value`` (already type-checked) is outside the range of config key ``where``
    or holds a non-finite number."""
    if value is None:
        return
    for v in _numbers(value):
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{where}: {v!r} is not a finite number")
    rng = CONFIG_RANGES.get(where)
    if rng is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not rng.contains(value):
        extra = "; a run with 0 epochs would save an untrained model" if where == "train.epochs" else ""
        raise ConfigError(f"{where}: {value!r} is out of range; allowed: {rng.describe()}{extra}")
