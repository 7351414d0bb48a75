"""Grad-CAM: peaks where the discriminative region is (constructed weights and a briefly trained CNN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from chestxr.reporting import find_last_conv, grad_cam


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster and deterministic on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _square_image(size: int = 32, corner: str = "tl", side: int = 8) -> torch.Tensor:
    img = torch.zeros(1, 1, size, size)
    r = slice(2, 2 + side) if corner[0] == "t" else slice(size - 2 - side, size - 2)
    c = slice(2, 2 + side) if corner[1] == "l" else slice(size - 2 - side, size - 2)
    img[0, 0, r, c] = 1.0
    return img


class BrightDark(nn.Module):
    """Hand-set weights. Channel 0 = local brightness, channel 1 = local darkness; finding 0's logit
    reads channel 0 (bright is suspicious), finding 1's reads channel 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight[0].fill_(1 / 9)
            self.conv.weight[1].fill_(-1 / 9)
            self.conv.bias.copy_(torch.tensor([0.0, 1.0]))
        self.relu = nn.ReLU(inplace=True)  # in-place after the hooked conv: must not break the hook
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(2))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)).mean(dim=(2, 3)))


def _peak_quadrant(cam: np.ndarray) -> str:
    h, w = cam.shape
    r, c = np.unravel_index(np.argmax(cam), cam.shape)
    return ("t" if r < h // 2 else "b") + ("l" if c < w // 2 else "r")


def _mass_in(cam: np.ndarray, corner: str, side: int = 12) -> float:
    h, w = cam.shape
    r = slice(0, side) if corner[0] == "t" else slice(h - side, h)
    c = slice(0, side) if corner[1] == "l" else slice(w - side, w)
    return float(cam[r, c].sum() / max(cam.sum(), 1e-12))


@pytest.mark.parametrize("corner", ["tl", "br", "tr"])
def test_constructed_weights_peak_on_square(corner):
    model = BrightDark()
    cam = grad_cam(model, _square_image(corner=corner), 0)
    assert cam.shape == (32, 32) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert _peak_quadrant(cam) == corner
    # finding 1 (darkness) looks everywhere except the square
    dark = grad_cam(model, _square_image(corner=corner), 1)
    assert dark[16 if corner[0] == "t" else 5, 16 if corner[1] == "l" else 5] > 0.9
    assert _mass_in(dark, corner, side=8) < _mass_in(cam, corner, side=8)


def test_cam_values_hand_checked():
    """One channel, linear path: CAM = relu(conv output) / max; at the square's centre the 3x3 mean is 1."""
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.Flatten(1), nn.LazyLinear(1))
    with torch.no_grad():
        model[0].weight.fill_(1 / 9)
        model(torch.zeros(1, 1, 8, 8))
        model[2].weight.fill_(1.0)
        model[2].bias.zero_()
    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 2:5, 2:5] = 1.0
    cam = grad_cam(model, img, 0)
    expected = torch.nn.functional.conv2d(img, torch.full((1, 1, 3, 3), 1 / 9), padding=1)[0, 0].numpy()
    np.testing.assert_allclose(cam, expected / expected.max(), atol=1e-6)


def test_trained_cnn_looks_at_the_square():
    """Train a tiny CNN a few steps: positive = bright square in the top-left corner on noise."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 1),
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    n = 32
    for _ in range(30):
        x = 0.3 * torch.rand(n, 1, 24, 24, generator=g)
        y = (torch.arange(n) % 2).float()
        x[y == 1, :, 2:9, 2:9] += 0.7
        loss = nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.4  # learned (chance is 0.69)
    test = 0.3 * torch.rand(1, 1, 24, 24, generator=g)
    test[:, :, 2:9, 2:9] += 0.7
    model.train()
    cam = grad_cam(model, test, 0)
    assert model.training  # mode restored
    assert _peak_quadrant(cam) == "tl"
    assert cam[2:9, 2:9].mean() > 3 * cam[12:, 12:].mean()


class _OneVsRest(nn.Module):
    """The ``members`` contract: one single-logit model per finding, outputs concatenated."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.cat([m(x) for m in self.members], dim=1)


class _Single(nn.Module):
    def __init__(self, bright: bool):
        super().__init__()
        inner = BrightDark()
        self.conv, self.relu, self.idx = inner.conv, inner.relu, 0 if bright else 1

    def forward(self, x):
        return self.relu(self.conv(x)).mean(dim=(2, 3))[:, self.idx : self.idx + 1]


def test_one_vs_rest_uses_the_members_conv():
    model = _OneVsRest([_Single(bright=True), _Single(bright=False)])
    img = _square_image(corner="br")
    assert _peak_quadrant(grad_cam(model, img, 0)) == "br"
    dark = grad_cam(model, img, 1)
    assert dark[5, 5] > 0.9 and dark[25, 25] < 0.1


def test_chestxr_models_work():
    from chestxr.modeling import OneVsRest, TinyCNN

    torch.manual_seed(0)
    for model in (
        TinyCNN(num_classes=3, in_channels=1),
        OneVsRest([TinyCNN(num_classes=1, in_channels=1) for _ in range(3)]),
    ):
        cam = grad_cam(model, torch.rand(1, 1, 32, 32), 2)
        assert cam.shape == (32, 32) and 0 <= cam.min() and cam.max() <= 1


def test_frozen_weights_and_grads_untouched():
    model = BrightDark()
    for p in model.parameters():
        p.requires_grad_(False)
    before = [p.clone() for p in model.parameters()]
    cam = grad_cam(model, _square_image(), 0)
    assert cam.max() == pytest.approx(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_negative_evidence_gives_zeros():
    model = BrightDark()
    with torch.no_grad():
        model.head.weight[0, 0] = -1.0  # brightness lowers finding 0: nothing raises it
    cam = grad_cam(model, _square_image(), 0)
    assert np.all(cam == 0)


def test_explicit_target_layer_and_errors():
    model = BrightDark()
    assert find_last_conv(model) is model.conv
    assert grad_cam(model, _square_image(), 0, target_layer=model.conv).shape == (32, 32)
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        grad_cam(model, torch.zeros(2, 1, 32, 32), 0)
    with pytest.raises(IndexError):
        grad_cam(model, _square_image(), 5)
    with pytest.raises(ValueError, match="no Conv2d"):
        find_last_conv(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not used"):
        grad_cam(model, _square_image(), 0, target_layer=nn.Conv2d(1, 1, 3))
