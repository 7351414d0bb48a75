"""Operating-point rule specs: parsing ``"sensitivity:0.9"``, ``"sensitivity:0.9@point"``, ``"youden"``...

=========================  =====================================================================
``sensitivity:X``          GUARANTEE: the highest threshold whose one-sided lower confidence bound
                           on sensitivity (Clopper-Pearson, at ``confidence``) is >= X
``specificity:X``          GUARANTEE: the lowest threshold whose lower bound on specificity >= X
``ppv:X``                  GUARANTEE: the lowest threshold whose lower bound on PPV >= X
``npv:X``                  GUARANTEE: the highest threshold whose lower bound on NPV >= X
``sensitivity:X@point``    point estimate (the pre-0.2 rule): highest threshold with sensitivity >= X
``specificity:X@point``    lowest threshold with specificity >= X (likewise ``ppv:X@point``,
                           ``npv:X@point``); NOT a guarantee
``youden``                 maximise sensitivity + specificity - 1; NOT a guarantee
``f1``                     maximise F1; NOT a guarantee
``cost:C_FP:C_FN``         minimise C_FP * FP + C_FN * FN; NOT a guarantee
``fixed:T``                T, whatever the data
=========================  =====================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chestxr.core import CalibrationError

ALLOWED_FORMS = (
    '"sensitivity:X", "specificity:X", "ppv:X", "npv:X" (guaranteed lower bound X in [0, 1]), '
    'the same with "@point" (point estimate, e.g. "sensitivity:0.9@point"), "youden", "f1", '
    '"cost:C_FP:C_FN" (non-negative costs, not both 0, e.g. "cost:1:5"), "fixed:T"'
)
TARGETED = ("sensitivity", "specificity", "ppv", "npv")


@dataclass(frozen=True)
class Method:
    """A parsed operating-point rule.

    kind: "sensitivity" | "specificity" | "ppv" | "npv" | "youden" | "f1" | "cost" | "fixed".
    target: X for the targeted kinds; guarantee: True for a targeted kind without "@point";
    value: T for fixed; cost_fp / cost_fn for cost. ``str(method)`` gives the canonical spec."""

    kind: str
    target: float | None = None
    value: float | None = None
    cost_fp: float | None = None
    cost_fn: float | None = None
    guarantee: bool = False

    def __str__(self) -> str:
        if self.kind in TARGETED:
            return f"{self.kind}:{self.target:g}" + ("" if self.guarantee else "@point")
        if self.kind == "cost":
            return f"cost:{self.cost_fp:g}:{self.cost_fn:g}"
        if self.kind == "fixed":
            return f"fixed:{self.value:g}"
        return self.kind


def parse_method(spec: "str | Method") -> Method:
    """Parse an operating-point spec such as "sensitivity:0.9", "sensitivity:0.9@point" or "cost:1:5".

    Raises CalibrationError naming the allowed forms when the spec is not one of them."""
    if isinstance(spec, Method):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise CalibrationError(f"threshold method {spec!r} is not a spec; allowed: {ALLOWED_FORMS}")
    text = spec.strip()
    point = False
    if "@" in text:
        text, suffix = text.split("@", 1)
        if suffix.strip().lower() != "point":
            raise CalibrationError(
                f"threshold method {spec!r}: only '@point' may follow the value; allowed: {ALLOWED_FORMS}"
            )
        point = True
    kind, *args = [p.strip() for p in text.split(":")]
    kind = kind.lower()
    try:
        nums = [float(a) for a in args]
    except ValueError:
        raise CalibrationError(f"threshold method {spec!r}: {args} are not numbers; allowed: {ALLOWED_FORMS}") from None
    if any(not math.isfinite(x) for x in nums):
        raise CalibrationError(f"threshold method {spec!r}: values must be finite; allowed: {ALLOWED_FORMS}")
    if point and kind not in TARGETED:
        raise CalibrationError(
            f"threshold method {spec!r}: '@point' applies to {TARGETED} only; allowed: {ALLOWED_FORMS}"
        )
    if kind in ("youden", "f1") and not nums:
        return Method(kind)
    if kind in TARGETED and len(nums) == 1 and 0.0 <= nums[0] <= 1.0:
        return Method(kind, target=nums[0], guarantee=not point)
    if kind == "cost" and len(nums) == 2 and min(nums) >= 0 and max(nums) > 0:
        return Method("cost", cost_fp=nums[0], cost_fn=nums[1])
    if kind == "fixed" and len(nums) == 1:
        if not 0.0 <= nums[0] <= 1.0:  # a probability threshold: outside [0, 1] it calls always or never
            raise CalibrationError(
                f"threshold method {spec!r}: fixed:T needs a probability threshold T in [0, 1], got {nums[0]:g}"
            )
        return Method("fixed", value=nums[0])
    raise CalibrationError(f"threshold method {spec!r} is not valid; allowed: {ALLOWED_FORMS}")
