"""chestxr/imaging/_transforms.py: resize modes, normalization values, augmentation determinism."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from chestxr.core import AugmentConfig, PreprocessConfig
from chestxr.imaging import IMAGENET_MEAN, IMAGENET_STD, build_transform, resize_square, resize_to


def _pre(**kw) -> PreprocessConfig:
    base = dict(size=32, channels=3, resize="letterbox", normalization="none")
    base.update(kw)
    return PreprocessConfig(**base)


@pytest.mark.parametrize("resize", ["letterbox", "crop", "stretch"])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_dtype(resize, channels):
    t = build_transform(_pre(resize=resize, channels=channels, normalization="imagenet"), None, train=False)
    out = t(np.random.default_rng(0).random((50, 80), dtype=np.float32))
    assert out.dtype == torch.float32 and tuple(out.shape) == (channels, 32, 32)
    assert out.is_contiguous()


def test_letterbox_pads_black_top_and_bottom_for_wide_image():
    img = np.ones((16, 64), dtype=np.float32)  # 4:1 wide -> 32 x 8 content, centred
    out = build_transform(_pre(channels=1), None, train=False)(img)[0]
    assert torch.all(out[:12] == 0) and torch.all(out[20:] == 0)
    torch.testing.assert_close(out[12:20], torch.ones(8, 32))
    tall = build_transform(_pre(channels=1), None, train=False)(np.ones((64, 16), np.float32))[0]
    assert torch.all(tall[:, :12] == 0) and torch.all(tall[:, 20:] == 0) and torch.all(tall[:, 12:20] == 1)


def test_crop_keeps_centre_and_stretch_keeps_everything():
    img = np.zeros((32, 96), dtype=np.float32)
    img[:, :32] = 1.0  # left third white, right third 0.5, centre black
    img[:, 64:] = 0.5
    crop = build_transform(_pre(channels=1, resize="crop"), None, train=False)(img)[0]
    torch.testing.assert_close(crop, torch.zeros(32, 32))  # the centre third only
    stretch = build_transform(_pre(channels=1, resize="stretch"), None, train=False)(img)[0]
    assert stretch[:, :9].min() > 0.99 and stretch[:, 12:20].max() < 0.01 and abs(stretch[5, 30] - 0.5) < 0.01


def test_resize_is_antialiased():
    # a 1-px checkerboard averages to 0.5 when shrunk with antialiasing (aliasing gives 0/1 stripes)
    img = (np.indices((256, 256)).sum(0) % 2).astype(np.float32)
    out = build_transform(_pre(channels=1, resize="stretch"), None, train=False)(img)
    assert abs(out.mean().item() - 0.5) < 0.01 and out.std().item() < 0.05


def test_normalization_values():
    img = np.full((40, 40), 0.5, dtype=np.float32)
    out = build_transform(_pre(normalization="imagenet"), None, train=False)(img)
    for c in range(3):
        expected = (0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(out[c], torch.full((32, 32), expected), atol=1e-6)
    xrv = build_transform(_pre(normalization="xrv", channels=1), None, train=False)
    np.testing.assert_allclose(
        xrv(np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)).numpy()[0, [0, -1], [0, -1]], [-1024.0, 1024.0], atol=1e-3
    )
    flat = xrv(np.full((8, 8), 0.25, np.float32))
    torch.testing.assert_close(flat, torch.full((1, 32, 32), -512.0))
    none = build_transform(_pre(normalization="none"), None, train=False)(img)
    torch.testing.assert_close(none, torch.full((3, 32, 32), 0.5))


def test_eval_transform_is_deterministic_and_uses_no_rng():
    t = build_transform(_pre(), AugmentConfig(enabled=True, hflip=True), train=False)
    assert not t.random
    img = np.random.default_rng(1).random((60, 50), dtype=np.float32)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b = t(img), t(img)
    assert torch.equal(torch.get_rng_state(), before)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_augmentation_seeded_deterministic_and_varies():
    aug = AugmentConfig(
        enabled=True, rotate_deg=10, scale=(0.9, 1.1), translate=0.1, brightness=0.2, contrast=0.2, hflip=True
    )
    t = build_transform(_pre(), aug, train=True)
    assert t.random
    img = np.random.default_rng(2).random((48, 48), dtype=np.float32)
    torch.manual_seed(123)
    first = [t(img) for _ in range(3)]
    torch.manual_seed(123)
    second = [t(img) for _ in range(3)]
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])  # different draws within a run
    assert all(x.min() >= 0 and x.max() <= 1 for x in first)
    # the transform survives pickling (DataLoader workers) and stays seedable
    clone = pickle.loads(pickle.dumps(t))
    torch.manual_seed(123)
    torch.testing.assert_close(clone(img), first[0], rtol=0, atol=0)


def test_augmentation_disabled_is_identity_path():
    img = np.random.default_rng(3).random((40, 40), dtype=np.float32)
    off = build_transform(_pre(), AugmentConfig(enabled=False), train=True)
    assert not off.random
    torch.testing.assert_close(off(img), build_transform(_pre(), None, train=False)(img))


def test_hflip_only_mirrors():
    img = np.zeros((32, 32), dtype=np.float32)
    img[:, :4] = 1.0
    aug = AugmentConfig(
        enabled=True, rotate_deg=0, scale=(1.0, 1.0), translate=0.0, brightness=0.0, contrast=0.0, hflip=True
    )
    t = build_transform(_pre(channels=1), aug, train=True)
    torch.manual_seed(0)
    outs = [t(img)[0] for _ in range(20)]
    flipped = [o for o in outs if o[:, -1].min() == 1]
    kept = [o for o in outs if o[:, 0].min() == 1]
    assert flipped and kept and len(flipped) + len(kept) == 20
    torch.testing.assert_close(flipped[0], torch.from_numpy(img[:, ::-1].copy()))


def test_resize_to_short_and_long():
    img = np.random.default_rng(4).random((100, 200), dtype=np.float32)
    assert resize_to(img, 50, "short").shape == (50, 100)
    assert resize_to(img, 50, "long").shape == (25, 50)
    assert resize_to(img, 400, "short").shape == (100, 200)  # no upscaling by default
    assert resize_to(img, 200, "short", upscale=True).shape == (200, 400)
    same = resize_to(img, 100, "short")
    np.testing.assert_array_equal(same, img)
    const = resize_to(np.full((90, 60), 0.3, np.float32), 30, "short")
    np.testing.assert_allclose(const, 0.3, atol=1e-6)
    with pytest.raises(ValueError):
        resize_to(img, 10, "middle")


def test_resize_square_rejects_unknown_mode():
    with pytest.raises(ValueError, match="resize mode"):
        resize_square(torch.zeros(1, 4, 4), 2, "zoom")
