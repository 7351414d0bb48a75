"""chestxr/imaging/_readers.py: DICOM/PNG decoding, LUT pipeline, errors. Synthetic files in tmp_path + real files."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import IDENTIFIERS, block_image, make_dataset, write_dicom, write_raw_dataset
from PIL import Image

from chestxr.core import ConfigError, HeaderCheckError, ImageReadError, PreprocessConfig
from chestxr.imaging import META_KEYS, ReadOptions, read_image, read_image_with_meta, sniff_format


@pytest.fixture(autouse=True)
def _hand_sized_arrays(monkeypatch):
    """These tests check pixel arithmetic on hand-sized arrays (2x2, 4x1, ...); the minimum image side
    that real reads enforce is tested in test_image_content.py."""
    monkeypatch.setattr("chestxr.imaging._decoding.MIN_IMAGE_SIDE", 1)


# ----------------------------------------------------------------------------- ReadOptions


def test_read_options_from_config_and_validation():
    pre = PreprocessConfig(voi="window", window=(40.0, 400.0), modalities=["cr", "DX"], allow_color=True)
    opt = ReadOptions.from_config(pre)
    assert opt.voi == "window" and opt.window == (40.0, 400.0) and opt.allow_color
    assert opt.modalities == ("CR", "DX") and opt.body_parts is None
    assert opt.max_pixels == 100_000_000
    hash(opt)  # frozen + tuples: usable as a key
    with pytest.raises(ConfigError, match="window"):
        ReadOptions(voi="window")
    with pytest.raises(ConfigError, match="width"):
        ReadOptions(voi="window", window=(0, 0))
    with pytest.raises(ConfigError, match="voi"):
        ReadOptions(voi="bogus")


# ----------------------------------------------------------------------------- grayscale pipeline


def test_monochrome2_minmax_values_and_orientation(tmp_path):
    img = block_image(low=100, high=1000)
    out, meta = read_image_with_meta(write_dicom(tmp_path / "a.dcm", img, bits_stored=12))
    assert out.dtype == np.float32 and out.shape == (32, 48) and out.flags.c_contiguous
    np.testing.assert_allclose(out, (img.astype(np.float64) - 100) / 900, atol=1e-6)
    assert out[0, 0] == 1.0 and out[20, 20] == 0.0  # bright block stays top-left
    assert meta["voi"] == "minmax" and meta["value_range"] == [100.0, 1000.0]


def test_monochrome1_is_inverted_in_place(tmp_path):
    img = block_image(low=100, high=1000)
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", img, photometric="MONOCHROME2"))
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", img, photometric="MONOCHROME1"))
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-7)
    # MONOCHROME1: high stored value = dark; the block is still top-left, now black on white
    assert mono1[:8, :8].max() == 0.0 and mono1[20, 20] == 1.0
    assert np.unravel_index(np.argmin(mono1), mono1.shape) == (0, 0)


def test_signed_pixel_representation(tmp_path):
    img = np.array([[-1000, 0], [500, 1000]], dtype=np.int16)
    out, meta = read_image_with_meta(write_dicom(tmp_path / "s.dcm", img))
    np.testing.assert_allclose(out, [[0.0, 0.5], [0.75, 1.0]], atol=1e-6)
    assert meta["value_range"] == [-1000.0, 1000.0]


def test_signed_12_bit_in_16_bit_container(tmp_path):
    # values -2048..2047 stored in 12 bits (two's complement), a classic CT/DX layout
    img = np.array([[-2048, -1], [0, 2047]], dtype=np.int16)
    out, meta = read_image_with_meta(write_dicom(tmp_path / "s12.dcm", img, bits_stored=12))
    assert meta["value_range"] == [-2048.0, 2047.0]
    np.testing.assert_allclose(out, (img + 2048) / 4095, atol=1e-6)


def test_rescale_slope_intercept_applied(tmp_path):
    img = np.array([[0, 100], [200, 200]], dtype=np.uint16)
    out, meta = read_image_with_meta(write_dicom(tmp_path / "r.dcm", img, slope=2.0, intercept=10.0))
    assert meta["value_range"] == [10.0, 410.0]  # 2 * [0, 200] + 10: the Modality LUT ran
    np.testing.assert_allclose(out, [[0.0, 0.5], [1.0, 1.0]], atol=1e-6)
    # an explicit window is in Modality-LUT units (HU-like): stored 0..2047, intercept -1024
    ramp = np.array([[924, 1024, 1124, 0]], dtype=np.uint16)  # -> -100, 0, 100, -1024
    opt = ReadOptions(voi="window", window=(0.0, 200.0))
    out = read_image(write_dicom(tmp_path / "hu.dcm", ramp, slope=1.0, intercept=-1024.0), opt)
    # DICOM LINEAR: y = ((x - (c - 0.5)) / (w - 1) + 0.5) clipped to [0, 1]
    np.testing.assert_allclose(out, [[0.0, 0.5 + 0.5 / 199, 1.0, 0.0]], atol=1e-6)


def _lut_file(tmp_path, name="lut.dcm"):
    img = np.array([[8, 10, 11], [12, 13, 20]], dtype=np.uint16)
    return write_dicom(tmp_path / name, img, window=(12, 4), voi_lut=([4, 10, 16], [0, 1000, 3000, 4000]))


def test_voi_lut_sequence_preferred_and_scaled_by_lut_range(tmp_path):
    out, meta = read_image_with_meta(_lut_file(tmp_path))
    assert meta["voi"] == "voi_lut" and meta["value_range"] == [0.0, 4000.0]
    # < first mapped -> entry 0; 10..13 -> entries; > last -> last entry; / 4000
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.25], [0.75, 1.0, 1.0]], atol=1e-6)


def test_window_tags_ignore_and_explicit(tmp_path):
    img = np.array([[0, 100, 150], [200, 300, 400]], dtype=np.uint16)
    path = write_dicom(tmp_path / "w.dcm", img, window=(200, 201))
    out, meta = read_image_with_meta(path)  # LINEAR window over ~[99.5, 299.5]
    assert meta["voi"] == "window (linear)" and meta["value_range"] == [99.5, 300.5]
    np.testing.assert_allclose(out, [[0.0, 0.0025, 0.2525], [0.5025, 1.0, 1.0]], atol=1e-6)
    ignored = read_image(path, ReadOptions(voi="ignore"))
    np.testing.assert_allclose(ignored, img / 400.0, atol=1e-6)
    explicit = read_image(path, ReadOptions(voi="window", window=(300.5, 201.0)))
    np.testing.assert_allclose(explicit, [[0, 0, 0], [0.0, 0.5, 1.0]], atol=1e-6)
    # explicit window overrides a VOI LUT too
    lut = read_image(_lut_file(tmp_path), ReadOptions(voi="window", window=(12.5, 3.0)))
    np.testing.assert_allclose(lut, [[0, 0, 0], [0.5, 1, 1]], atol=1e-6)
    np.testing.assert_allclose(
        read_image(_lut_file(tmp_path, "l2.dcm"), ReadOptions(voi="ignore")),
        (np.array([[8, 10, 11], [12, 13, 20]]) - 8) / 12,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "function, expected",
    [
        ("LINEAR_EXACT", [0.0, 0.25, 0.5, 1.0]),
        ("SIGMOID", [1 / (1 + np.exp(2.0)), 1 / (1 + np.exp(1.0)), 0.5, 1 / (1 + np.exp(-2.0))]),
    ],
)
def test_voi_lut_functions(tmp_path, function, expected):
    img = np.array([[0, 50, 100, 200]], dtype=np.uint16)
    out = read_image(write_dicom(tmp_path / "f.dcm", img, window=(100, 200), voi_function=function))
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 12, 15, 16])
def test_bits_stored(tmp_path, bits):
    dtype = np.uint8 if bits == 8 else np.uint16
    top = 2**bits - 1
    img = np.array([[3, top // 3], [top // 2, top]], dtype=dtype)
    out, meta = read_image_with_meta(write_dicom(tmp_path / f"b{bits}.dcm", img, bits_stored=bits))
    assert meta["bits_stored"] == bits
    np.testing.assert_allclose(out, (img.astype(np.float64) - 3) / (top - 3), atol=1e-6)


# ----------------------------------------------------------------------------- compression


def _compressed_twins(tmp_path, syntax):
    from pydicom.pixels import get_encoder

    encoder = get_encoder(syntax)
    if not encoder.is_available:
        pytest.skip(f"no encoder for {syntax.name}: {encoder.missing_dependencies}")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4096, size=(40, 64), dtype=np.uint16)  # J2K needs >= 32 px
    img[:6, :6] = 4095
    plain = write_dicom(tmp_path / "plain.dcm", img, bits_stored=12, window=(2048, 4096))
    ds = make_dataset(img, bits_stored=12, window=(2048, 4096))
    ds.compress(syntax)
    ds.save_as(tmp_path / "packed.dat", enforce_file_format=True)
    return plain, tmp_path / "packed.dat"


@pytest.mark.parametrize("syntax_name", ["RLELossless", "JPEG2000Lossless", "JPEGLSLossless"])
def test_lossless_compressed_equals_uncompressed(tmp_path, syntax_name):
    import pydicom.uid

    plain, packed = _compressed_twins(tmp_path, getattr(pydicom.uid, syntax_name))
    a, meta_a = read_image_with_meta(plain)
    b, meta_b = read_image_with_meta(packed)
    assert meta_b["transfer_syntax"] == getattr(pydicom.uid, syntax_name).name
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- frames, color, headers


def test_multiframe_uses_first_frame_and_warns(tmp_path):
    frames = np.stack([block_image(), np.full((32, 48), 7, np.uint16), np.zeros((32, 48), np.uint16)])
    with pytest.warns(UserWarning, match="3 frames; using the first"):
        out, meta = read_image_with_meta(write_dicom(tmp_path / "mf.dcm", frames, frames=3))
    assert out.shape == (32, 48) and meta["frames"] == 3
    np.testing.assert_allclose(out, read_image(write_dicom(tmp_path / "one.dcm", block_image())))


def test_rgb_refused_unless_allow_color(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    rgb[0, 0] = (255, 255, 255)
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")
    with pytest.raises(ImageReadError, match="RGB is not grayscale.*allow_color"):
        read_image(path)
    out = read_image(path, ReadOptions(allow_color=True))
    assert out.shape == (4, 4)
    np.testing.assert_allclose(out[1, 1], 0.299, atol=1e-6)
    np.testing.assert_allclose(out[0, 0], 1.0, atol=1e-6)


def test_header_checks(tmp_path):
    path = write_dicom(tmp_path / "h.dcm", block_image(), modality="CR", body_part="CHEST", view="AP")
    assert read_image(
        path, ReadOptions(modalities=("cr", "dx"), body_parts=("CHEST",), view_positions=("AP", "PA"))
    ).shape == (32, 48)
    with pytest.raises(HeaderCheckError, match=r"Modality.*'CR'.*\['DX'\]"):
        read_image(path, ReadOptions(modalities=("DX",)))
    with pytest.raises(HeaderCheckError, match="BodyPartExamined"):
        read_image(path, ReadOptions(body_parts=("HAND",)))
    with pytest.raises(HeaderCheckError, match="ViewPosition"):
        read_image(path, ReadOptions(view_positions=("LL",)))
    nobody = write_dicom(tmp_path / "nb.dcm", block_image(), body_part=None)
    with pytest.raises(HeaderCheckError, match="BodyPartExamined.*missing"):
        read_image(nobody, ReadOptions(body_parts=("CHEST",)))
    # PNG has no header: the filters do not apply
    png = tmp_path / "x.png"
    Image.fromarray(np.eye(4, dtype=np.uint8) * 255).save(png)
    assert read_image(png, ReadOptions(modalities=("DX",))).shape == (4, 4)


def test_metadata_has_no_identifiers(tmp_path):
    out, meta = read_image_with_meta(write_dicom(tmp_path / "id.dcm", block_image(), bits_stored=12))
    assert set(meta) == set(META_KEYS)
    assert meta["modality"] == "CR" and meta["body_part"] == "CHEST" and meta["view_position"] == "PA"
    assert (meta["rows"], meta["cols"], meta["frames"]) == (32, 48, 1)
    assert meta["transfer_syntax"] == "Explicit VR Little Endian" and meta["photometric"] == "MONOCHROME2"
    text = repr(meta)
    for value in IDENTIFIERS.values():
        assert value not in text
    assert "1.2." not in text  # no UIDs at all


def test_no_pixel_data(tmp_path):
    ds = make_dataset(block_image(), with_pixels=False)
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match="no PixelData"):
        read_image(tmp_path / "sr.dcm")


def test_max_pixels_guard(tmp_path):
    dcm = write_dicom(tmp_path / "big.dcm", block_image())
    with pytest.raises(ImageReadError, match=r"48x32 = 1,536 pixels.*1,000"):
        read_image(dcm, ReadOptions(max_pixels=1000))
    png = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(png)
    with pytest.raises(ImageReadError, match=r"30x40 = 1,200 pixels"):
        read_image(png, ReadOptions(max_pixels=1000))


# ----------------------------------------------------------------------------- content, not extension


def test_format_by_content_not_extension(tmp_path):
    img = block_image(np.uint8, low=10, high=250)
    png_as_dcm = tmp_path / "really_png.dcm"
    Image.fromarray(img).save(png_as_dcm, format="PNG")
    dcm_as_png = write_dicom(tmp_path / "really_dicom.png", img)
    assert sniff_format(png_as_dcm) == "pillow" and sniff_format(dcm_as_png) == "dicom"
    a, meta_a = read_image_with_meta(png_as_dcm)
    b, meta_b = read_image_with_meta(dcm_as_png)
    assert meta_a["format"] == "PNG" and meta_b["format"] == "DICOM"
    np.testing.assert_allclose(a, img / 255.0, atol=1e-7)
    np.testing.assert_allclose(b, (img - 10.0) / 240.0, atol=1e-6)


def test_dicom_without_preamble(tmp_path):
    img = block_image()
    with_meta = write_dicom(tmp_path / "np.dcm", img, preamble=False)
    assert with_meta.read_bytes()[:2] == b"\x02\x00" and sniff_format(with_meta) == "dicom-nopreamble"
    raw = write_raw_dataset(tmp_path / "raw.bin", img)
    assert raw.read_bytes()[:2] == b"\x08\x00" and sniff_format(raw) == "dicom-nopreamble"
    expected = (img - 100.0) / 900.0
    np.testing.assert_allclose(read_image(with_meta), expected, atol=1e-6)
    out, meta = read_image_with_meta(raw)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert meta["transfer_syntax"] == "Implicit VR Little Endian"


# ----------------------------------------------------------------------------- broken files


def test_zero_byte_text_and_missing(tmp_path):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.dcm: file is empty"):
        read_image(empty)
    text = tmp_path / "notes.png"
    text.write_text("Patient notes, not an image\n" * 10)
    with pytest.raises(ImageReadError, match="not a DICOM, PNG, JPEG, TIFF or BMP"):
        read_image(text)
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.dcm")
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path)


def test_truncated_dicom_and_png(tmp_path):
    full = write_dicom(tmp_path / "full.dcm", block_image(shape=(64, 64)))
    data = full.read_bytes()
    for cut in (len(data) - 3000, 200):
        bad = tmp_path / f"cut{cut}.dcm"
        bad.write_bytes(data[:cut])
        with pytest.raises(ImageReadError, match=rf"cut{cut}\.dcm: .*(truncated|corrupt|PixelData)") as info:
            read_image(bad)
        assert info.value.__cause__ is None  # no chained library traceback
        assert info.value.__context__ is None or info.value.__suppress_context__
    png = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(png)
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png.read_bytes()[:-200])
    with pytest.raises(ImageReadError, match=r"cut\.png: .*truncated"):
        read_image(cut_png)


# ----------------------------------------------------------------------------- PNG / JPEG modes


def test_png_16_bit(tmp_path):
    img = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    path = tmp_path / "d16.png"
    Image.fromarray(img).save(path)
    out, meta = read_image_with_meta(path)
    assert meta["bit_depth"] == 16 and meta["mode"].startswith("I")
    np.testing.assert_allclose(out, img / 65535.0, atol=1e-7)


@pytest.mark.parametrize(
    "mode, pixel, expected",
    [
        ("L", 128, 128 / 255),
        ("RGB", (255, 0, 0), 76 / 255),  # luma 0.299 * 255 = 76.2 -> 76
        ("RGBA", (0, 255, 0, 10), 150 / 255),  # 0.587 * 255 = 149.7 -> 150; alpha dropped
        ("LA", (200, 0), 200 / 255),
    ],
)
def test_png_modes_to_gray(tmp_path, mode, pixel, expected):
    path = tmp_path / f"{mode}.png"
    im = Image.new(mode, (5, 3), pixel)
    im.putpixel((0, 0), (0,) * len(pixel) if isinstance(pixel, tuple) else 0)  # not constant
    im.save(path)
    out, meta = read_image_with_meta(path, ReadOptions(allow_color=True))
    assert out.shape == (3, 5) and meta["mode"] == mode and meta["bit_depth"] == 8
    np.testing.assert_allclose(out[1:], expected, atol=1e-6)
    assert out[0, 0] == 0.0


def test_palette_png_and_jpeg(tmp_path):
    im = Image.new("P", (4, 2), 1)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 1 = pure blue
    im.putpixel((0, 0), 0)  # index 0 = black
    im.save(tmp_path / "p.png")
    out, meta = read_image_with_meta(tmp_path / "p.png", ReadOptions(allow_color=True))
    assert meta["mode"] == "P"
    np.testing.assert_allclose(out[1], 29 / 255, atol=1e-6)  # 0.114 * 255 = 29.07
    assert out[0, 0] == 0.0
    jpg = np.full((16, 16), 200, np.uint8)
    jpg[8:] = 40
    Image.fromarray(jpg).save(tmp_path / "j.jpg", quality=95)
    out, meta = read_image_with_meta(tmp_path / "j.jpg")
    assert meta["format"] == "JPEG"
    np.testing.assert_allclose(out[:6], 200 / 255, atol=1.5 / 255)


# ----------------------------------------------------------------------------- real files


def _dicom_dir(shared_data: Path) -> Path:
    d = shared_data / "dicom"
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    return d


def test_real_rg3_jpeg_lossless_equals_rle(shared_data):
    d = _dicom_dir(shared_data)
    a, meta_a = read_image_with_meta(d / "RG3_JPLL.dcm")
    b, meta_b = read_image_with_meta(d / "RG3_RLE.dcm")
    assert meta_a["transfer_syntax"].startswith("JPEG Lossless") and meta_b["transfer_syntax"] == "RLE Lossless"
    assert a.shape == (1760, 1760)
    np.testing.assert_array_equal(a, b)


def test_real_rg1_monochrome1_window_values(shared_data):
    import pydicom

    d = _dicom_dir(shared_data)
    out, meta = read_image_with_meta(d / "RG1_UNCR.dcm")
    assert meta["photometric"] == "MONOCHROME1" and meta["bits_stored"] == 15
    assert meta["voi"] == "window (linear)" and meta["value_range"] == [0.0, 30000.0]
    raw = pydicom.dcmread(d / "RG1_UNCR.dcm").pixel_array.astype(np.float64)
    expected = 1.0 - np.clip((raw - 14999.5) / 29999.0 + 0.5, 0, 1)  # window 15000/30000, inverted
    np.testing.assert_allclose(out, expected, atol=2e-6)
    lossy = read_image(d / "RG1_J2KI.dcm")
    assert lossy.shape == out.shape and np.abs(lossy - out).mean() < 0.005
    assert not np.array_equal(lossy, out)  # it IS lossy


@pytest.mark.parametrize(
    "name", ["RG1_UNCR.dcm", "RG1_J2KI.dcm", "gdcm-CR-MONO1-10-chest.dcm", "nccid_nih_*.dcm", "siim_*.dcm"]
)
def test_real_chest_dicoms_have_bright_mediastinum(shared_data, name):
    """Anatomy check of the whole pipeline (incl. MONOCHROME1 inversion): on a frontal chest
    film the spine/mediastinum (centre) is brighter than both lungs."""
    path = next(_dicom_dir(shared_data).glob(name))
    img = read_image(path)
    assert img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0
    h, w = img.shape
    band = img[h // 3 : 2 * h // 3]
    centre = band[:, int(w * 0.45) : int(w * 0.55)].mean()
    left, right = band[:, int(w * 0.2) : int(w * 0.3)].mean(), band[:, int(w * 0.7) : int(w * 0.8)].mean()
    assert centre > max(left, right) + 0.05


def test_real_dicom_with_png_extension(shared_data, tmp_path):
    src = _dicom_dir(shared_data) / "gdcm-CR-MONO1-10-chest.dcm"
    dst = tmp_path / "copy.png"
    shutil.copyfile(src, dst)
    np.testing.assert_array_equal(read_image(dst), read_image(src))


def test_real_nih_pngs(shared_data):
    d = shared_data / "nih14" / "images"
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    for path in sorted(d.glob("*.png"))[:3]:
        out, meta = read_image_with_meta(path)
        ref = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
        assert out.shape == (512, 512) and meta["format"] == "PNG"
        np.testing.assert_allclose(out, ref, atol=1e-6)


def test_no_warnings_for_plain_files(tmp_path):
    path = write_dicom(tmp_path / "q.dcm", block_image())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(path)


def test_invalid_window_tags_fall_back_to_minmax(tmp_path):
    img = np.array([[10, 20], [30, 50]], dtype=np.uint16)
    path = write_dicom(tmp_path / "badw.dcm", img, window=(30, 0))
    with pytest.warns(UserWarning, match="invalid window"):
        out, meta = read_image_with_meta(path)
    assert meta["voi"] == "minmax"
    np.testing.assert_allclose(out, (img - 10.0) / 40.0, atol=1e-6)


def test_unexpected_library_errors_are_wrapped(tmp_path, monkeypatch):
    import chestxr.imaging._dicom_pixels as dicom_pixels  # the DICOM pipeline reads the header

    path = write_dicom(tmp_path / "ok.dcm", block_image())

    def boom(ds):
        raise KeyError("deep library detail")

    monkeypatch.setattr(dicom_pixels, "_dicom_meta", boom)
    with pytest.raises(ImageReadError, match=r"ok\.dcm: cannot read the image \(KeyError") as info:
        read_image(path)
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    "twin",
    [
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_pydicom_bundled_lossless_twins_are_identical(twin):
    """pydicom ships one small signed MR in several encodings: JPEG-LS lossless decoding (no JPEG-LS
    encoder is installed to make our own), JPEG 2000, RLE, big endian, implicit VR -> same pixels."""
    from pydicom.data import get_testdata_file

    ref_path, twin_path = get_testdata_file("MR_small.dcm", download=False), get_testdata_file(twin, download=False)
    if ref_path is None or twin_path is None:
        pytest.skip("pydicom's bundled test files are not installed")
    ref, ref_meta = read_image_with_meta(ref_path)
    out, meta = read_image_with_meta(twin_path)
    assert ref.shape == (64, 64) and 0.0 <= ref.min() and ref.max() == 1.0
    assert meta["transfer_syntax"] != ref_meta["transfer_syntax"]
    np.testing.assert_array_equal(out, ref)
