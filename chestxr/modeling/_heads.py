"""Heads of chestxr models: read, replace or re-initialise the final Linear layer, and move a trained model to
another finding list (``transfer_findings``: backbone copied, head rows of shared findings kept, one-vs-rest members
re-ordered).

Head weight (n_findings, features), bias (n_findings,); findings are matched by name with aliases
(:func:`chestxr.data.match_findings`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from chestxr.core import CheckpointError
from chestxr.modeling._architectures import (
    HEAD_PATHS,
    HeadLinear,
    ModelSpec,
    OneVsRest,
    attach_attr,
    replace_module,
    spec_of,
)


def get_head(model: nn.Module) -> nn.Linear:
    """The final Linear layer of a single (non-OvR) model built by :func:`build_model`."""
    if isinstance(model, OneVsRest):
        raise ValueError("a OneVsRest model has one head per member: use get_head(model.member(i))")
    return model.get_submodule(HEAD_PATHS[spec_of(model).backbone])  # type: ignore[return-value]


def feature_heads(model: nn.Module) -> list[nn.Module]:
    """The final Linear layer(s) whose input is the model's penultimate features: one for a single model,
    one per member (in findings order) for a OneVsRest model."""
    if isinstance(model, OneVsRest):
        return [get_head(model.member(i)) for i in range(len(model.members))]
    return [get_head(model)]


def set_head(model: nn.Module, head: nn.Linear) -> None:
    """Replace the final Linear layer of a single model (keeps ``chestxr_spec`` in step)."""
    spec = spec_of(model)
    replace_module(model, HEAD_PATHS[spec.backbone], head)
    attach_attr(
        model,
        "chestxr_spec",
        ModelSpec(
            spec.backbone, head.out_features, spec.mode, spec.in_channels, getattr(head, "dropout", spec.dropout)
        ),
    )


def reset_head(model: nn.Module, n_findings: int) -> nn.Module:
    """Give ``model`` a freshly initialised head with ``n_findings`` outputs (in place, returned).

    OneVsRest: members 0..n-1 keep their backbones (extra members copy member 0's), all heads fresh.
    """
    if isinstance(model, OneVsRest):
        import copy

        old = list(model.members)
        members = [old[i] if i < len(old) else copy.deepcopy(old[0]) for i in range(n_findings)]
        for m in members:
            reset_head(m, 1)
        model.members = nn.ModuleList(members)
        spec = spec_of(model)
        attach_attr(model, "chestxr_spec", ModelSpec(spec.backbone, n_findings, "ovr", spec.in_channels, spec.dropout))
        return model
    head = get_head(model)
    set_head(model, HeadLinear(head.in_features, n_findings, dropout=getattr(head, "dropout", 0.0)))
    return model


def head_rows_for(old_findings: Sequence[str], new_findings: Sequence[str]) -> list[int | None]:
    """For each new finding, the index of the same finding in ``old_findings`` (None if absent).

    Names are matched as everywhere in chestxr (:func:`chestxr.data.match_findings`): an
    exact name wins, else aliases ("Pleural Effusion" is "Effusion"), case, spaces, "_" and "-"
    are ignored. Two old names for the same finding are refused (the head rows would be ambiguous).
    """
    from chestxr.data import match_findings, same_finding_key

    seen: dict[str, str] = {}
    for name in old_findings:
        key = same_finding_key(name)
        if key in seen:
            raise CheckpointError(f"findings {seen[key]!r} and {name!r} are the same finding")
        seen[key] = name
    index = {name: i for i, name in enumerate(old_findings)}
    matched = match_findings(list(old_findings), list(new_findings))
    return [index[c] if c is not None else None for c in (matched[n] for n in new_findings)]


def _find_head(state: Mapping[str, torch.Tensor], n_out: int, backbone: str | None) -> str:
    paths = [HEAD_PATHS[backbone]] if backbone else sorted(set(HEAD_PATHS.values()))
    found = [
        p
        for p in paths
        if f"{p}.weight" in state and state[f"{p}.weight"].ndim == 2 and state[f"{p}.weight"].shape[0] == n_out
    ]
    if len(found) != 1:
        raise CheckpointError(
            f"cannot find the {n_out}-output head in the checkpoint's state (candidates {found}); pass backbone="
        )
    return found[0]


def _fresh_rows(n: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    lin = nn.Linear(in_features, n)
    return lin.weight.detach(), lin.bias.detach()


def transfer_findings(
    model_old_state: Mapping[str, torch.Tensor] | nn.Module,
    old_findings: Sequence[str],
    new_findings: Sequence[str],
    model: nn.Module | None = None,
    *,
    backbone: str | None = None,
) -> dict[str, torch.Tensor]:
    """State dict for ``new_findings`` from a chestxr model trained on ``old_findings``.

    The backbone is copied; head rows (weight (n, features) and bias (n,)) of findings present in
    both lists (names matched with aliases, :func:`head_rows_for`) are copied, the others re-initialised (from
    ``model``'s own head when given, else nn.Linear's default init). OneVsRest states: members are
    re-ordered by finding; a new finding's member gets member 0's backbone and a fresh head.
    If ``model`` is given, the result is also loaded into it (strictly).
    """
    old = model_old_state.state_dict() if isinstance(model_old_state, nn.Module) else model_old_state
    old = {k: v.detach().clone() for k, v in old.items()}
    src = head_rows_for(old_findings, new_findings)
    mine = model.state_dict() if model is not None else None
    new: dict[str, torch.Tensor] = {}
    if any(k.startswith("members.") for k in old):
        prefix = lambda i: f"members.{i}."  # noqa: E731
        member0 = {k[len(prefix(0)) :]: v for k, v in old.items() if k.startswith(prefix(0))}
        head = _find_head(member0, 1, backbone)
        for j, i in enumerate(src):
            for suffix in member0:
                key = prefix(j) + suffix
                if i is not None:
                    new[key] = old[prefix(i) + suffix]
                elif suffix.startswith(head + "."):
                    fresh = _fresh_rows(1, member0[f"{head}.weight"].shape[1])
                    value = fresh[0] if suffix.endswith("weight") else fresh[1]
                    new[key] = mine[key].clone() if mine is not None and key in mine else value
                else:
                    new[key] = member0[suffix]
    else:
        head = _find_head(old, len(old_findings), backbone)
        new = {k: v for k, v in old.items() if not k.startswith(head + ".")}
        w_old, b_old = old[f"{head}.weight"], old[f"{head}.bias"]
        if mine is not None and f"{head}.weight" in mine:
            w, b = mine[f"{head}.weight"].clone(), mine[f"{head}.bias"].clone()
        else:
            w, b = _fresh_rows(len(new_findings), w_old.shape[1])
        for j, i in enumerate(src):
            if i is not None:
                w[j], b[j] = w_old[i], b_old[i]
        new[f"{head}.weight"], new[f"{head}.bias"] = w, b
    if model is not None:
        try:
            model.load_state_dict(new, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"the checkpoint does not fit the new model: {exc}") from None
    return new
