"""Masked BCE and pos_weight against hand-computed values.

BCE on a logit x with target t is softplus(x) - t*x; with pos_weight w it is
-(w t log s(x) + (1 - t) log(1 - s(x))). Reference values:
softplus(0) = log 2 = 0.6931472, softplus(2) = 2.1269280, softplus(-2) = 0.1269280.
"""

from __future__ import annotations

import math

import pytest
import torch

from chestxr.core import ConfigError
from chestxr.modeling import MaskedBCEWithLogitsLoss, compute_pos_weight, masked_bce_with_logits, resolve_pos_weight

LOG2 = math.log(2.0)
SP2 = 2.1269280110429727  # softplus(2) = log(1 + e^2)


def _t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def test_hard_and_soft_targets_by_hand():
    logits = _t([[0.0, 2.0]])
    targets = _t([[1.0, 0.3]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # entry 1: -log s(0) = log 2; entry 2: softplus(2) - 0.3 * 2 = 1.526928
    expected = (LOG2 + (SP2 - 0.6)) / 2
    assert masked_bce_with_logits(logits, targets, mask).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(1.1100376, abs=1e-6)


def test_masked_entries_contribute_nothing_even_if_nan():
    logits = _t([[0.0, 2.0], [5.0, -1.0]])
    targets = _t([[1.0, float("nan")], [float("nan"), 0.0]])
    mask = torch.tensor([[True, False], [False, True]])
    logits.requires_grad_(True)
    loss = masked_bce_with_logits(logits, targets, mask)
    # (log 2 + softplus(-1)) / 2
    expected = (LOG2 + math.log1p(math.exp(-1.0))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    g = logits.grad
    assert torch.isfinite(g).all()
    assert g[0, 1] == 0 and g[1, 0] == 0
    # d/dx mean = (sigmoid(x) - t) / n_unmasked
    assert g[0, 0].item() == pytest.approx((0.5 - 1.0) / 2, abs=1e-6)


def test_all_masked_gives_zero_with_grad_not_nan():
    logits = torch.randn(3, 2, requires_grad=True)
    loss = masked_bce_with_logits(logits, torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 2))


def test_pos_weight_scales_positive_term_only():
    logits = _t([[0.0, 2.0]])
    targets = _t([[1.0, 0.3]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    pw = _t([3.0, 2.0])
    # entry 1: 3 * log 2; entry 2: -(2 * 0.3 * log s(2) + 0.7 * log(1 - s(2)))
    e2 = 2 * 0.3 * (SP2 - 2.0) + 0.7 * SP2
    expected = (3 * LOG2 + e2) / 2
    got = masked_bce_with_logits(logits, targets, mask, pos_weight=pw)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert MaskedBCEWithLogitsLoss(pos_weight=[3.0, 2.0])(logits, targets, mask).item() == pytest.approx(
        expected, abs=1e-6
    )


def test_low_precision_logits_computed_in_float32():
    logits = _t([[0.0, 2.0]]).to(torch.bfloat16)
    got = masked_bce_with_logits(logits, _t([[1.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx((LOG2 + SP2) / 2, abs=1e-5)


def test_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        masked_bce_with_logits(torch.zeros(2, 3), torch.zeros(2, 2), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="pos_weight"):
        masked_bce_with_logits(
            torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), pos_weight=torch.ones(2)
        )


def test_module_buffer_moves_and_is_in_state_dict():
    loss = MaskedBCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 4.0]))
    assert "pos_weight" in dict(loss.named_buffers())
    assert MaskedBCEWithLogitsLoss().pos_weight is None


def test_compute_pos_weight_by_hand():
    targets = _t([[1, 0, 0, 1], [0, 0, 0, 1], [0, 1, 0, 1], [1, 0.5, 0, 1], [1, 0, 0, 1]])
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[4, 0] = False  # the last row of column 0 does not count
    with pytest.warns(UserWarning, match=r"\[2\]"):
        pw = compute_pos_weight(targets, mask, clip=50.0)
    # col0: 2 pos / 2 neg -> 1; col1: 1.5 pos / 3.5 neg -> 2.3333; col2: no positive -> 1;
    # col3: 5 pos / 0 neg -> 0, clipped to 1/50
    assert pw.tolist() == pytest.approx([1.0, 3.5 / 1.5, 1.0, 1 / 50.0], abs=1e-6)
    assert pw.dtype == torch.float32


def test_compute_pos_weight_clip_high():
    targets = torch.zeros(1000, 1)
    targets[0, 0] = 1
    assert compute_pos_weight(targets, torch.ones(1000, 1, dtype=torch.bool), clip=100).item() == 100.0
    assert compute_pos_weight(targets, torch.ones(1000, 1, dtype=torch.bool), clip=1000).item() == 999.0


@pytest.mark.parametrize(
    "setting, expected", [(None, None), (2.0, [2.0, 2.0]), ([1.0, 3.0], [1.0, 3.0]), ("auto", [1.0, 3.0])]
)
def test_resolve_pos_weight(setting, expected):
    targets = _t([[1, 1], [0, 0], [1, 0], [0, 0]])
    mask = torch.ones(4, 2, dtype=torch.bool)
    got = resolve_pos_weight(setting, targets=targets, mask=mask)
    assert (got is None) if expected is None else got.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("setting", ["often", [1.0], [1.0, -2.0]])
def test_resolve_pos_weight_errors(setting):
    with pytest.raises(ConfigError, match="pos_weight"):
        resolve_pos_weight(setting, targets=torch.zeros(2, 2), mask=torch.ones(2, 2, dtype=torch.bool))
