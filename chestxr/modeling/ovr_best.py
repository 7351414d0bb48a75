"""One-vs-rest best epochs: each binary member of a one-vs-rest model keeps the weights of its own best epoch.

The epoch loop (chestxr/modeling/fitting.py) keeps a state dict assembled member by member (``update_ovr_best``),
saves it as model.safetensors (``assemble_best``) and, on --resume, starts from the saved one (``load_best_state``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from torch import nn


def update_ovr_best(model: nn.Module, per: list[float], best: dict, best_state: Optional[dict], epoch: int):
    """Keep, for each binary model of a one-vs-rest wrapper, the weights of its own best epoch."""
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    per_member = list(best.get("per_member") or [-math.inf] * len(per))
    if best_state is None:
        best_state = sd
    for j, a in enumerate(per):
        score = -math.inf if math.isnan(a) else a
        if score > per_member[j] or best["epoch"] < 0:
            prefix = f"members.{j}."
            for k, v in sd.items():
                if k.startswith(prefix):
                    best_state[k] = v
            per_member[j] = max(score, per_member[j]) if best["epoch"] >= 0 else score
    return best_state, {**best, "per_member": per_member}


def assemble_best(model: nn.Module, state: dict) -> nn.Module:
    import copy

    m = copy.deepcopy(model).cpu()
    m.load_state_dict(state)
    return m


def load_best_state(run_dir: Path) -> Optional[dict]:
    p = run_dir / "model.safetensors"
    if not p.exists():
        return None
    from safetensors.torch import load_file

    return load_file(str(p))
