"""Grey content is grey (issue 24.5): a grey radiograph saved as RGB / RGBA / palette / CMYK / JPEG (PNG, JPEG,
TIFF, BMP, DICOM RGB, YBR_FULL_422 JPEG, PALETTE COLOR) is read as grayscale without preprocessing.allow_color, to
the same values allow_color gives; real colour (a colour map, a sepia tint, a coloured marker, channels 9 of 255
apart) still needs allow_color. The tolerance is GREY_TOLERANCE = 8 / 255 on every pixel."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import make_dataset, write_dicom
from PIL import Image

from chestxr.core import ImageReadError
from chestxr.imaging import ReadOptions, read_image, read_image_with_meta
from chestxr.imaging._grey_content import GREY_TOLERANCE

COLOUR = ReadOptions(allow_color=True)


def grey_film(size: int = 64, seed: int = 0) -> np.ndarray:
    """A radiograph-like 8-bit grey image: dark background, bright 'lungs and ribs', noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = 60 + 120 * np.exp(-((x - 0.5) ** 2) / 0.05) * (0.6 + 0.4 * np.sin(20 * y)) + rng.normal(0, 6, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def _rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=-1)


def write_grey_variants(folder: Path, g: np.ndarray) -> dict[str, Path]:
    """The grey film ``g`` saved in every colour container a public collection uses."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(name: str, im: Image.Image, **kw) -> None:
        out[name] = folder / name
        im.save(out[name], **kw)

    rgb = Image.fromarray(_rgb(g))
    save("rgb.png", rgb)
    save("rgb.bmp", rgb)
    save("rgba.png", Image.fromarray(np.dstack([_rgb(g), np.full_like(g, 255)]), "RGBA"))
    save("rgba_varying_alpha.png", Image.fromarray(np.dstack([_rgb(g), (g // 2 + 100).astype(np.uint8)]), "RGBA"))
    pal = Image.fromarray(g).convert("P")  # 'P' from L: grey palette
    pal.info["transparency"] = 0  # a transparent index used to make this "colour"
    save("palette_transparency.png", pal, transparency=0)
    # palette whose unused entries are colours: only the used ones are grey
    idx = (g // 2).astype(np.uint8)
    mixed = Image.fromarray(idx, "P")
    mixed.putpalette([v for i in range(128) for v in (2 * i,) * 3] + [255, 0, 0] * 128)
    save("palette_unused_colours.png", mixed)
    save("cmyk.jpg", Image.fromarray(g).convert("CMYK"), quality=95)
    save("cmyk.tif", Image.fromarray(g).convert("CMYK"))
    save("rgb_q75.jpg", rgb, quality=75)
    save("rgb_q30_420.jpg", rgb, quality=30, subsampling=2)
    noisy = np.clip(_rgb(g).astype(int) + np.random.default_rng(1).integers(-3, 4, g.shape + (3,)), 0, 255)
    save("rgb_noise3_q95.jpg", Image.fromarray(noisy.astype(np.uint8)), quality=95)
    out["rgb.dcm"] = write_dicom(folder / "rgb.dcm", _rgb(g), photometric="RGB")
    out["ybr_full_422.dcm"] = _write_jpeg_dicom(folder / "ybr_full_422.dcm", _rgb(g))
    out["palette.dcm"] = _write_palette_dicom(folder / "palette.dcm", g)
    return out


def write_colour_variants(folder: Path, g: np.ndarray) -> dict[str, Path]:
    """Real colour: must still be refused without allow_color."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    gi = g.astype(int)
    jet = np.stack([gi, 255 - gi, np.abs(128 - gi) * 2], -1).clip(0, 255).astype(np.uint8)
    sepia = np.stack([gi, gi * 0.9, gi * 0.75], -1).astype(np.uint8)
    marker = _rgb(g).copy()
    marker[4:7, 4:7] = (255, 0, 0)
    just_over = _rgb(g).copy()
    just_over[10, 10] = (100, 109, 100)  # 9 of 255 apart on one pixel: over the tolerance
    for name, arr in {"jet.png": jet, "sepia.png": sepia, "marker.png": marker, "just_over.png": just_over}.items():
        out[name] = folder / name
        Image.fromarray(arr).save(out[name])
    out["sepia.jpg"] = folder / "sepia.jpg"
    Image.fromarray(sepia).save(out["sepia.jpg"], quality=90)
    colour_dcm = _rgb(g).copy()
    colour_dcm[:, :20, 0] = 255
    out["colour.dcm"] = write_dicom(folder / "colour.dcm", colour_dcm, photometric="RGB")
    return out


def _write_jpeg_dicom(path: Path, rgb: np.ndarray) -> Path:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90, subsampling=1)  # 4:2:2
    ds = make_dataset(rgb, photometric="YBR_FULL_422", with_pixels=False)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _write_palette_dicom(path: Path, g: np.ndarray) -> Path:
    ds = make_dataset(g, photometric="PALETTE COLOR")
    lut = [i * 257 for i in range(256)]  # 16-bit entries, grey
    for colour in ("Red", "Green", "Blue"):
        ds.add_new(f"{colour}PaletteColorLookupTableDescriptor", "US", [256, 0, 16])
        ds.add_new(f"{colour}PaletteColorLookupTableData", "OW", np.asarray(lut, "<u2").tobytes())
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def film():
    return grey_film()


@pytest.fixture(scope="module")
def grey_files(tmp_path_factory, film):
    return write_grey_variants(tmp_path_factory.mktemp("grey"), film)


@pytest.fixture(scope="module")
def colour_files(tmp_path_factory, film):
    return write_colour_variants(tmp_path_factory.mktemp("colour"), film)


def test_the_tolerance_is_8_of_255():
    assert GREY_TOLERANCE == pytest.approx(8 / 255)


@pytest.mark.parametrize(
    "name",
    [
        "rgb.png",
        "rgb.bmp",
        "rgba.png",
        "rgba_varying_alpha.png",
        "palette_transparency.png",
        "palette_unused_colours.png",
        "cmyk.jpg",
        "cmyk.tif",
        "rgb_q75.jpg",
        "rgb_q30_420.jpg",
        "rgb_noise3_q95.jpg",
        "rgb.dcm",
        "ybr_full_422.dcm",
        "palette.dcm",
    ],
)
def test_grey_content_in_a_colour_container_reads_as_grey(name, grey_files, film):
    path = grey_files[name]
    out, meta = read_image_with_meta(path)  # default options: allow_color is False
    assert out.shape == film.shape and out.dtype == np.float32
    # the very values allow_color gives (so nothing read before changes, and cached entries stay valid)
    np.testing.assert_array_equal(out, read_image(path, COLOUR))
    lossy = name.endswith(".jpg") or name.startswith("ybr")
    if name.startswith("palette_unused"):
        expected = (film // 2 * 2) / 255.0
    else:
        expected = film / 255.0
    if not lossy:
        np.testing.assert_allclose(out, expected, atol=0.5 / 255 + 1e-6)
    else:
        assert np.abs(out - expected).mean() < 8 / 255  # JPEG loses some of the film's noise


@pytest.mark.parametrize("name", ["jet.png", "sepia.png", "sepia.jpg", "marker.png", "just_over.png", "colour.dcm"])
def test_real_colour_still_needs_allow_color(name, colour_files):
    path = colour_files[name]
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert "not grayscale" in msg and "preprocessing.allow_color" in msg, msg
    assert "% of the range" in msg and "grey content allows 3.1 %" in msg, msg
    assert read_image(path, COLOUR).shape == (64, 64)


def test_exactly_at_the_tolerance_is_grey(tmp_path, film):
    arr = _rgb(film).copy()
    arr[10, 10] = (100, 108, 100)  # 8 of 255 apart: at the tolerance
    Image.fromarray(arr).save(tmp_path / "at.png")
    assert read_image(tmp_path / "at.png").shape == film.shape


def test_the_decode_cache_entry_is_the_allow_color_one(grey_files, tmp_path):
    """The output of an image readable before did not change, so its cache entries stay valid; a new entry under
    the default options holds the same pixels."""
    from chestxr.imaging import ImageCache

    for name in ("rgb.png", "rgb_q75.jpg", "ybr_full_422.dcm"):
        a = ImageCache(tmp_path / "c", options=ReadOptions(), side=32).get(grey_files[name])
        b = ImageCache(tmp_path / "c", options=COLOUR, side=32).get(grey_files[name])
        np.testing.assert_array_equal(a, b)


def test_predict_scores_an_rgb_saved_radiograph_with_a_default_run(tmp_path, grey_files, capsys):
    """End to end: a run without allow_color predicts a grey film saved as RGB PNG and as CMYK JPEG."""
    import pandas as pd
    from pacs_helpers import make_run

    from chestxr.cli import main

    run = make_run(tmp_path / "run")
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("rgb.png", "cmyk.jpg", "rgb_q75.jpg"):
        (folder / name).write_bytes(grey_files[name].read_bytes())
    code = main(["predict", "--checkpoint", str(run), str(folder), "--out", str(tmp_path / "p"), "--workers", "0"])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert len(pd.read_csv(tmp_path / "p" / "predictions.csv")) == 3


def test_the_measurement_script_runs(shared_data, tmp_path):
    """experiments/grey_content.py (the README's numbers) on the first NIH image: every grey container read as
    grey, no real colour."""
    import importlib.util
    import json

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("grey_content_exp", REPO / "experiments" / "grey_content.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = tmp_path / "g.json"
    assert module.main(["--limit", "1", "--shared", str(shared_data.parent), "--results", str(results)]) == 0
    summary = json.loads(results.read_text())
    assert summary["grey_content_read_as_grey"] == summary["grey_content_files"] == 7
    assert summary["real_colour_read_as_grey"] == 0 and summary["grey_content_old_rule_accepted"] == 0
