"""Images that carry no picture are refused, never scored; broken modality/VOI parameters fall back soundly;
colour is governed by preprocessing.allow_color for DICOM and PNG alike; error hints say what the decoder said."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from dicom_factory import block_image, write_dicom
from PIL import Image

from chestxr.core import ImageReadError
from chestxr.imaging import MIN_IMAGE_SIDE, ReadOptions, read_image, read_image_with_meta

# ----------------------------------------------------------------------------- point 3: content checks


@pytest.mark.parametrize(
    "slope, intercept",
    [("NaN", None), (0, None), ("inf", None), (1, "NaN"), ("-inf", -1024)],
)
def test_broken_rescale_falls_back_to_stored_values_with_a_warning(tmp_path, slope, intercept):
    img = block_image(low=100, high=1000)
    reference = read_image(write_dicom(tmp_path / "ref.dcm", img))
    path = write_dicom(tmp_path / "bad.dcm", img, slope=slope, intercept=intercept)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, meta = read_image_with_meta(path)
    messages = [str(w.message) for w in caught if "bad.dcm" in str(w.message)]
    assert len(messages) == 1 and "RescaleSlope/RescaleIntercept" in messages[0] and "stored values" in messages[0]
    assert np.isfinite(out).all() and meta["voi"] == "minmax"
    np.testing.assert_allclose(out, reference, atol=1e-6)


def test_broken_rescale_ignores_the_window_in_rescaled_units(tmp_path):
    img = block_image(low=100, high=1000)
    path = write_dicom(tmp_path / "w.dcm", img, slope="NaN", window=(550, 900))
    with pytest.warns(UserWarning, match="RescaleSlope"):
        out, meta = read_image_with_meta(path)
    assert meta["voi"] == "minmax"
    np.testing.assert_allclose(out, read_image(write_dicom(tmp_path / "ref.dcm", img)), atol=1e-6)


@pytest.mark.parametrize("center, width", [(550, "1e309"), ("NaN", 900), (550, "NaN"), ("inf", 900)])
def test_non_finite_window_falls_back_to_minmax_with_a_warning(tmp_path, center, width):
    img = block_image(low=100, high=1000)
    path = write_dicom(tmp_path / "w.dcm", img, window=(center, width))
    with pytest.warns(UserWarning, match="ignoring invalid window center/width"):
        out, meta = read_image_with_meta(path)
    assert meta["voi"] == "minmax" and np.isfinite(meta["value_range"]).all()
    np.testing.assert_allclose(out, read_image(write_dicom(tmp_path / "ref.dcm", img)), atol=1e-6)


def test_constant_dicom_is_refused_naming_the_file(tmp_path):
    path = write_dicom(tmp_path / "flat.dcm", np.full((32, 48), 7, np.uint16))
    with pytest.raises(ImageReadError, match=r"flat\.dcm: .*constant.*carries no picture") as info:
        read_image(path)
    assert info.value.path == str(path)


def test_window_that_flattens_everything_is_refused(tmp_path):
    path = write_dicom(tmp_path / "w.dcm", block_image(low=100, high=1000))
    with pytest.raises(ImageReadError, match=r"constant.*window"):
        read_image(path, ReadOptions(voi="window", window=(50000.0, 10.0)))


def test_all_zero_16_bit_png_is_refused(tmp_path):
    path = tmp_path / "zero16.png"
    Image.fromarray(np.zeros((40, 40), np.uint16)).save(path)
    with pytest.raises(ImageReadError, match=r"zero16\.png: .*constant"):
        read_image(path)


@pytest.mark.parametrize("shape", [(1, 1), (1, 40000), (MIN_IMAGE_SIDE - 1, 64)])
def test_images_below_the_minimum_size_are_refused(tmp_path, shape):
    rng = np.random.default_rng(0)
    path = tmp_path / "small.png"
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
    with pytest.raises(ImageReadError, match=rf"small\.png: image is {shape[1]}x{shape[0]}.*minimum.*{MIN_IMAGE_SIDE}"):
        read_image(path)
    ok = tmp_path / "ok.png"
    Image.fromarray(rng.integers(0, 255, (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE), dtype=np.uint8)).save(ok)
    assert read_image(ok).shape == (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)


def test_small_dicom_is_refused(tmp_path):
    path = write_dicom(tmp_path / "thin.dcm", np.arange(400, dtype=np.uint16).reshape(1, 400))
    with pytest.raises(ImageReadError, match=r"thin\.dcm: image is 400x1"):
        read_image(path)


# ----------------------------------------------------------------------------- point 9: consistency


def _colour_png(path):
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[:5, :5] = 255
    Image.fromarray(rgb).save(path)
    return path


def test_colour_png_follows_allow_color_like_dicom(tmp_path):
    png = _colour_png(tmp_path / "c.png")
    with pytest.raises(ImageReadError, match=r"c\.png: .*RGB.*not grayscale.*preprocessing\.allow_color"):
        read_image(png)
    out = read_image(png, ReadOptions(allow_color=True))
    np.testing.assert_allclose(out[10, 10], 76 / 255, atol=1e-6)
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[:5, :5] = 255
    dcm = write_dicom(tmp_path / "c.dcm", rgb, photometric="RGB")
    with pytest.raises(ImageReadError, match=r"c\.dcm: .*RGB.*not grayscale.*preprocessing\.allow_color"):
        read_image(dcm)
    assert read_image(dcm, ReadOptions(allow_color=True)).shape == (20, 20)


def test_gray_with_alpha_png_is_grayscale(tmp_path):
    arr = np.stack([np.tile(np.arange(20, dtype=np.uint8) * 10, (20, 1)), np.full((20, 20), 255, np.uint8)], -1)
    path = tmp_path / "la.png"
    Image.fromarray(arr, mode="LA").save(path)
    np.testing.assert_allclose(read_image(path)[0, :3], np.array([0, 10, 20]) / 255, atol=1e-6)


def test_unknown_format_error_lists_every_accepted_format(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"GIF89a" + bytes(200))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    for fmt in ("DICOM", "PNG", "JPEG", "TIFF", "BMP"):
        assert fmt in info.value.reason


def test_tiff_and_bmp_decode(tmp_path):
    img = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    for ext in ("tif", "bmp"):
        Image.fromarray(img).save(tmp_path / f"g.{ext}")
        np.testing.assert_allclose(read_image(tmp_path / f"g.{ext}"), img / 255, atol=1e-6)


def test_truncated_hint_only_where_the_decoder_said_so(tmp_path, monkeypatch):
    # a compressed DICOM whose decoder is missing: the hint is the decoders, not "truncated"
    import pydicom

    path = write_dicom(tmp_path / "ok.dcm", block_image())

    def no_decoder(self):
        raise RuntimeError("Unable to decode the pixel data: no plugin available for JPEG 2000")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert "truncated" not in info.value.reason and "no plugin available" in info.value.reason
    monkeypatch.undo()
    # a DICOM cut inside its pixel data: the decoder says too few bytes -> truncated
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 500])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(cut)
    # a header pydicom cannot parse for a reason other than running out of bytes
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad VR 'ZZ'")))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert "truncated" not in info.value.reason and "bad VR" in info.value.reason


# ----------------------------------------------------------------------------- point 3: non-finite model outputs


class _Loader(list):
    """A list of batches with the ``dataset.on_bad_image`` the engine reads."""

    def __init__(self, batches, on_bad_image):
        super().__init__(batches)
        self.dataset = type("D", (), {"on_bad_image": on_bad_image})()


class _NaNForSecondRow:
    """Callable model: logits (b, 2) = per-image mean, with NaN for finding 1 of dataset index 1."""

    def eval(self):
        return self

    def __call__(self, images):

        out = images.mean(dim=(1, 2, 3))[:, None].repeat(1, 2)
        out[images[:, 0, 0, 0] == 1.0, 1] = float("nan")
        return out


def _batch():
    import torch

    images = torch.zeros(3, 1, 4, 4)
    images[1] = 1.0
    images[2, :, :2] = 0.5
    return {
        "image": images,
        "ok": torch.tensor([True, True, True]),
        "index": torch.tensor([0, 1, 2]),
        "reason": ["", "", ""],
        "path": ["a.png", "b.png", "c.png"],
    }


def test_non_finite_model_outputs_are_skipped_or_refused_never_scored():
    import torch

    from chestxr.modeling import predict

    preds = predict(
        _NaNForSecondRow(),
        _Loader([_batch()], "skip"),
        device=torch.device("cpu"),
        channels_last=False,
        findings=["Opacity", "Nodule"],
    )
    assert preds.indices.tolist() == [0, 2] and np.isfinite(preds.logits).all()
    assert len(preds.skipped) == 1 and preds.skipped[0][0] == 1
    assert "NaN/inf for Nodule" in preds.skipped[0][1]
    with pytest.raises(ImageReadError, match=r"b\.png: the model's output is NaN/inf for Nodule.*on-bad-image skip"):
        predict(
            _NaNForSecondRow(),
            _Loader([_batch()], "error"),
            device=torch.device("cpu"),
            channels_last=False,
            findings=["Opacity", "Nodule"],
        )
