"""Bad inputs end to end, through the CLI: every broken image or manifest gets one readable error that
names the file (and the row/column for manifests), the command exits non-zero and no library traceback
reaches the user; ``on_bad_image: skip`` skips exactly the unreadable files in train, predict and
evaluate, lists them with their reasons and never counts them as negatives.

Everything is generated in tmp_path: a tiny synthetic set (48 px) and a corpus of broken files.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_args
from dicom_factory import block_image, make_dataset, write_dicom
from PIL import Image

from chestxr.cli import main

FINDINGS = ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]
TINY = tiny_args()
CR_DX = ["--set", "preprocessing.modalities=[CR,DX]"]

#: file name -> a phrase its error must contain (None: the file is fine and must be read).
CORPUS = {
    "zero.png": "empty (0 bytes)",
    "zero.jpg": "empty (0 bytes)",
    "zero.dcm": "empty (0 bytes)",
    "trunc.png": "truncated",
    "trunc.jpg": "truncated",
    "trunc.dcm": "truncated",
    "trunc_header.dcm": "no PixelData",
    "text.dcm": "not a DICOM, PNG, JPEG, TIFF or BMP file",
    "nopixels.dcm": "no PixelData",
    "rgb.dcm": "not grayscale",
    "rgb.png": "not grayscale",  # the same preprocessing.allow_color rule as DICOM
    "ct.dcm": "Modality (0008,0060) is 'CT', not one of ['CR', 'DX']",
    "huge.png": "144,000,000 pixels, over the limit",
    "huge.dcm": "144,000,000 pixels, over the limit",
    "png_named.dcm": None,
    "dicom_named.png": None,
    "multiframe.dcm": None,
    # no picture: refused, never scored (a blank image once came out p = 0.99999 "positive")
    "flat.dcm": "image is constant",
    "zero16.png": "image is constant",
    "tiny.png": "below the minimum of 16x16",
    "thin.dcm": "below the minimum of 16x16",
    # a broken RescaleSlope falls back to the stored values (with a warning) and is scored
    "nanslope.dcm": None,
}
BAD = sorted(k for k, v in CORPUS.items() if v is not None)


def write_corpus(folder: Path, good_png: bytes, good_dcm: bytes) -> dict[str, Path]:
    """Write every file of CORPUS into ``folder``; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)).save(buf, "JPEG")
    good_jpg = buf.getvalue()
    raw = {
        "zero.png": b"",
        "zero.jpg": b"",
        "zero.dcm": b"",
        "trunc.png": good_png[: len(good_png) // 2],
        "trunc.jpg": good_jpg[: len(good_jpg) // 2],
        "trunc.dcm": good_dcm[: len(good_dcm) // 2],  # header complete, pixel data cut
        "trunc_header.dcm": good_dcm[:200],  # cut inside the header
        "text.dcm": b"Radiology note: see attached image.\n",
        "png_named.dcm": good_png,
        "dicom_named.png": good_dcm,
    }
    for name, data in raw.items():
        (folder / name).write_bytes(data)
    write_dicom(folder / "nopixels.dcm", block_image(), with_pixels=False)
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0], rgb[:8, :8] = 200, 255  # real colour (an all-zero RGB is grey content, read as gray)
    write_dicom(folder / "rgb.dcm", rgb, photometric="RGB")
    write_dicom(folder / "multiframe.dcm", np.stack([block_image()] * 3), frames=3)
    write_dicom(folder / "ct.dcm", block_image(), modality="CT")
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0], colour[:8, :8] = 200, 255
    Image.fromarray(colour).save(folder / "rgb.png")
    write_dicom(folder / "flat.dcm", np.full((32, 32), 900, np.uint16))
    Image.fromarray(np.zeros((40, 40), np.uint16)).save(folder / "zero16.png")
    Image.fromarray((np.arange(40000) % 256).astype(np.uint8).reshape(1, 40000)).save(folder / "tiny.png")
    write_dicom(folder / "thin.dcm", np.arange(400, dtype=np.uint16).reshape(1, 400))
    write_dicom(folder / "nanslope.dcm", block_image(), slope="NaN")
    write_big_png(folder / "huge.png", 12000, 12000)
    ds = make_dataset(block_image())
    ds.Rows = ds.Columns = 12000  # header says 144 M pixels; refused before the pixel data is touched
    ds.save_as(folder / "huge.dcm", enforce_file_format=True)
    return {name: folder / name for name in CORPUS}


def write_big_png(path: Path, width: int, height: int) -> None:
    """A valid 8-bit grayscale PNG of zeros (12000 x 12000 -> ~0.6 MB, written in about half a second)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(1)
    block = bytes(width + 1) * 1000  # filter byte 0 + a row of zeros, 1000 rows
    idat = b"".join(
        [comp.compress(block) for _ in range(height // 1000)]
        + [comp.compress(bytes(width + 1) * (height % 1000)), comp.flush()]
    )
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from chestxr.data import generate_synthetic_dataset

    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("rel") / "data", n_images=40, seed=1, size=48, with_split=True
    )


@pytest.fixture(scope="module")
def corpus(synth) -> dict[str, Path]:
    images = synth.parent / "images"
    good_png = next(p for p in sorted(images.glob("*.png"))).read_bytes()
    good_dcm = next(p for p in sorted(images.glob("*.dcm"))).read_bytes()
    return write_corpus(synth.parent.parent / "corpus", good_png, good_dcm)


@pytest.fixture(scope="module")
def run_dir(synth) -> Path:
    """A tiny trained run that only accepts CR/DX DICOMs."""
    out = synth.parent.parent / "run"
    assert main(["train", "--manifest", str(synth), "--out", str(out), *TINY, *CR_DX]) == 0
    return out


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``chestxr ARGV`` in-process; (exit code, stdout, stderr). A raised exception fails the test."""
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_clean_error(err: str, *phrases: str) -> None:
    assert "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in:\n{err}"


def with_row_replaced(synth: Path, out: Path, image: Path, *, split: str = "train") -> Path:
    """A copy of the manifest with the first ``split`` row's image replaced by ``image`` (absolute)."""
    frame = pd.read_csv(synth, dtype=str, keep_default_na=False)
    frame["path"] = [str((synth.parent / p).resolve()) for p in frame["path"]]
    i = frame.index[frame["split"] == split][0]
    frame.loc[i, "path"] = str(image)
    frame.to_csv(out, index=False)
    return out


# ----------------------------------------------------------------------------- images: predict


@pytest.mark.parametrize("name", BAD)
def test_predict_bad_image_is_one_readable_error(name, corpus, run_dir, tmp_path, capsys):
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(run_dir),
        str(corpus[name]),
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "0",
    )
    assert code == 2
    assert_clean_error(err, f"chestxr predict: error: {corpus[name]}: ", CORPUS[name])
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name", ["png_named.dcm", "dicom_named.png", "multiframe.dcm", "nanslope.dcm"])
def test_predict_reads_by_content_not_extension(name, corpus, run_dir, tmp_path, capsys, recwarn):
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(run_dir),
        str(corpus[name]),
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "0",
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert len(table) == 1 and table["path"].iloc[0] == name
    probs = table[[f"prob_{f}" for f in FINDINGS]].to_numpy()
    assert np.isfinite(probs).all() and ((probs > 0) & (probs < 1)).all()
    if name == "multiframe.dcm":
        assert any(str(w.message) == f"{corpus[name]}: DICOM has 3 frames; using the first" for w in recwarn)
    assert "Traceback" not in err


def test_predict_folder_skip_lists_every_bad_file(corpus, run_dir, tmp_path, capsys):
    folder = next(iter(corpus.values())).parent
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(run_dir),
        str(folder),
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "0",
        "--on-bad-image",
        "skip",
    )
    assert code == 0, err
    skipped = pd.read_csv(tmp_path / "p" / "skipped.csv")
    assert sorted(skipped["path"]) == BAD
    for path, reason in zip(skipped["path"], skipped["reason"]):
        assert CORPUS[path] in reason, (path, reason)
    predicted = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert sorted(predicted["path"]) == ["dicom_named.png", "multiframe.dcm", "nanslope.dcm", "png_named.dcm"]
    assert "Traceback" not in err


def test_predict_subprocess_stderr_is_one_line(corpus, run_dir, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "chestxr",
            "predict",
            "--checkpoint",
            str(run_dir),
            str(corpus["trunc.png"]),
            "--out",
            str(tmp_path / "p"),
            "--workers",
            "0",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "CHESTXR_NO_PROGRESS": "1"},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"chestxr predict: error: {corpus['trunc.png']}: cannot decode the PNG data (OSError: image file is "
        "truncated); the file may be truncated or corrupt: export it again"
    )
    assert "--on-bad-image skip" in lines[0]


def test_predict_bad_image_with_workers_is_readable(corpus, run_dir, synth, tmp_path, capsys):
    manifest = with_row_replaced(synth, tmp_path / "m.csv", corpus["zero.png"], split="test")
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(run_dir),
        "--manifest",
        str(manifest),
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "2",
        "--batch-size",
        "4",
    )
    assert code == 2
    assert_clean_error(err, str(corpus["zero.png"]), "empty (0 bytes)")


# ----------------------------------------------------------------------------- images: train


@pytest.mark.parametrize(
    "name", ["zero.dcm", "trunc.png", "trunc.dcm", "text.dcm", "nopixels.dcm", "rgb.dcm", "ct.dcm", "huge.png"]
)
def test_train_bad_image_is_one_readable_error(name, corpus, synth, tmp_path, capsys):
    manifest = with_row_replaced(synth, tmp_path / "m.csv", corpus[name])
    code, out, err = cli(capsys, "train", "--manifest", str(manifest), "--out", str(tmp_path / "r"), *TINY, *CR_DX)
    assert code == 2
    assert_clean_error(err, f"chestxr train: error: {corpus[name]}: ", CORPUS[name])


def test_train_bad_image_with_workers_is_readable(corpus, synth, tmp_path, capsys):
    manifest = with_row_replaced(synth, tmp_path / "m.csv", corpus["zero.png"])
    code, out, err = cli(
        capsys, "train", "--manifest", str(manifest), "--out", str(tmp_path / "r"), *TINY, "--set", "data.num_workers=2"
    )
    assert code == 2
    assert_clean_error(err, str(corpus["zero.png"]), "empty (0 bytes)")


# ----------------------------------------------------------------------------- manifests

HEAD = "path,patient_id,Opacity,Cardiomegaly\n"


def _rows(synth: Path) -> list[str]:
    images = sorted((synth.parent / "images").iterdir())[:3]
    return [f"{p.resolve()},p{i},{i % 2},{(i + 1) % 2}\n" for i, p in enumerate(images)]


BAD_LABELS = ["yes", "2", "-0.5", "NaN", "nan", "inf", "TRUE"]


@pytest.mark.parametrize("value", BAD_LABELS)
def test_validate_bad_label_names_row_column_value(value, synth, tmp_path, capsys):
    rows = _rows(synth)
    text = HEAD + rows[0] + rows[1].replace(",1,0\n", f",{value},0\n").replace(",0,1\n", f",{value},1\n") + rows[2]
    m = tmp_path / "m.csv"
    m.write_text(text)
    code, out, err = cli(capsys, "manifest", "validate", str(m))
    assert code == 1
    assert f"row 3, column 'Opacity', value '{value}': not a label value" in out
    assert f"{m}: invalid: 1 error(s)" in out
    assert "Traceback" not in out + err


def test_train_bad_label_is_one_readable_error(synth, tmp_path, capsys):
    rows = _rows(synth)
    m = tmp_path / "m.csv"
    m.write_text(HEAD + rows[0] + rows[1].replace(",1,0\n", ",yes,0\n") + rows[2])
    code, out, err = cli(capsys, "train", "--manifest", str(m), "--out", str(tmp_path / "r"), *TINY)
    assert code == 2
    assert_clean_error(err, f"chestxr train: error: {m}: 1 problem(s)", "row 3, column 'Opacity', value 'yes'")


def test_non_utf8_manifest_names_row(synth, tmp_path, capsys):
    rows = _rows(synth)
    m = tmp_path / "latin1.csv"
    m.write_bytes((HEAD + rows[0] + rows[1].replace(",p1,", ",p\xe9,") + rows[2]).encode("latin-1"))
    code, out, err = cli(capsys, "manifest", "validate", str(m))
    assert code == 1
    assert "row 3: not valid UTF-8: byte 0xe9" in out and "iconv" in out
    code, out, err = cli(capsys, "train", "--manifest", str(m), "--out", str(tmp_path / "r"), *TINY)
    assert code == 2
    assert_clean_error(err, str(m), "not valid UTF-8")


def test_duplicate_columns_named(synth, tmp_path, capsys):
    rows = _rows(synth)
    m = tmp_path / "dup.csv"
    m.write_text("path,patient_id,Opacity,Opacity\n" + "".join(rows))
    code, out, err = cli(capsys, "manifest", "validate", str(m))
    assert code == 1
    assert "row 1, column 'Opacity': column name appears 2 times (columns C, D)" in out
    code, out, err = cli(capsys, "train", "--manifest", str(m), "--out", str(tmp_path / "r"), *TINY)
    assert code == 2
    assert_clean_error(err, str(m), "column name appears 2 times")


def test_bom_and_crlf_manifests_work(synth, run_dir, tmp_path, capsys):
    rows = _rows(synth)
    m = tmp_path / "bom_crlf.csv"
    m.write_bytes(("\ufeff" + HEAD + "".join(rows)).replace("\n", "\r\n").encode("utf-8"))
    code, out, err = cli(capsys, "manifest", "validate", str(m))
    assert code == 0 and f"{m}: valid: 0 error(s)" in out
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(run_dir),
        "--manifest",
        str(m),
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "0",
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "p" / "predictions.csv", dtype=str)
    assert list(table["patient_id"]) == ["p0", "p1", "p2"]


def test_missing_image_in_manifest_named(synth, tmp_path, capsys):
    rows = _rows(synth)
    m = tmp_path / "m.csv"
    m.write_text(HEAD + rows[0] + "gone/missing.png,p9,0,1\n")
    code, out, err = cli(capsys, "manifest", "validate", str(m))
    assert code == 1 and "row 3, column 'path'" in out and "missing.png" in out


# ----------------------------------------------------------------------------- on_bad_image: skip


@pytest.fixture(scope="module")
def broken(synth, corpus) -> dict:
    """The synthetic manifest with one train, one val and two test images replaced by broken files."""
    frame = pd.read_csv(synth, dtype=str, keep_default_na=False)
    frame["path"] = [str((synth.parent / p).resolve()) for p in frame["path"]]
    bad = {"train": "zero.dcm", "val": "text.dcm", "test": "trunc.png"}
    replaced: dict[str, list[int]] = {}
    for split, name in bad.items():
        i = int(frame.index[frame["split"] == split][0])
        frame.loc[i, "path"] = str(corpus[name])
        replaced.setdefault(split, []).append(i)
    j = int(frame.index[frame["split"] == "test"][1])
    frame.loc[j, "path"] = str(corpus["nopixels.dcm"])
    replaced["test"].append(j)
    out = synth.parent.parent / "broken.csv"
    frame.to_csv(out, index=False)
    return {"manifest": out, "frame": frame, "replaced": replaced}


def test_train_skip_finishes_and_lists_skipped(broken, corpus, tmp_path, capsys):
    code, out, err = cli(
        capsys,
        "train",
        "--manifest",
        str(broken["manifest"]),
        "--out",
        str(tmp_path / "r"),
        *TINY,
        "--set",
        "data.on_bad_image=skip",
    )
    assert code == 0, err
    assert "Traceback" not in err
    skipped = pd.read_csv(tmp_path / "r" / "skipped.csv")
    train_row = skipped[skipped["split"] == "train"]
    assert list(train_row["path"]) == [str(corpus["zero.dcm"])]
    assert "empty (0 bytes)" in train_row["reason"].iloc[0]
    assert len(pd.read_csv(tmp_path / "r" / "metrics.csv")) == 1
    assert "image(s) skipped as unreadable" in out


def test_train_skip_lists_validation_images_too(broken, corpus, tmp_path, capsys):
    code, out, err = cli(
        capsys,
        "train",
        "--manifest",
        str(broken["manifest"]),
        "--out",
        str(tmp_path / "r"),
        *TINY,
        "--set",
        "data.on_bad_image=skip",
    )
    assert code == 0, err
    skipped = pd.read_csv(tmp_path / "r" / "skipped.csv")
    assert sorted(zip(skipped["split"], skipped["path"])) == [
        ("train", str(corpus["zero.dcm"])),
        ("val", str(corpus["text.dcm"])),
    ]
    assert "2 image(s) skipped as unreadable" in out


def test_predict_skip_excludes_skipped(broken, run_dir, corpus, tmp_path, capsys):
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(run_dir),
        "--manifest",
        str(broken["manifest"]),
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "0",
        "--on-bad-image",
        "skip",
    )
    assert code == 0, err
    skipped = pd.read_csv(tmp_path / "p" / "skipped.csv")
    expected = {str(corpus[n]) for n in ("zero.dcm", "text.dcm", "trunc.png", "nopixels.dcm")}
    base = broken["manifest"].parent
    assert {str(base / p) for p in skipped["path"]} == expected  # paths relative to the manifest's folder
    predictions = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert len(predictions) == len(broken["frame"]) - 4
    assert not {str(base / p) for p in predictions["path"]} & expected
    assert "skipped:" in out


def test_evaluate_skip_never_counts_skipped_as_negative(broken, run_dir, corpus, tmp_path, capsys):
    code, out, err = cli(
        capsys,
        "evaluate",
        "--checkpoint",
        str(run_dir),
        "--manifest",
        str(broken["manifest"]),
        "--split",
        "test",
        "--out",
        str(tmp_path / "e"),
        "--workers",
        "0",
        "--bootstrap",
        "20",
        "--on-bad-image",
        "skip",
    )
    assert code == 0, err
    frame = broken["frame"]
    test = frame[frame["split"] == "test"].drop(index=broken["replaced"]["test"])
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())["findings"]
    for f in FINDINGS:
        values = test[f]
        n_pos, n_neg = int((values == "1").sum()), int((values == "0").sum())
        assert (metrics[f]["n"], metrics[f]["n_pos"], metrics[f]["n_neg"]) == (n_pos + n_neg, n_pos, n_neg), f
    predictions = pd.read_csv(tmp_path / "e" / "predictions.csv")
    assert len(predictions) == len(test)
    # without skip the same manifest is refused with the first unreadable file named
    code, out, err = cli(
        capsys,
        "evaluate",
        "--checkpoint",
        str(run_dir),
        "--manifest",
        str(broken["manifest"]),
        "--split",
        "test",
        "--out",
        str(tmp_path / "e2"),
        "--workers",
        "0",
        "--bootstrap",
        "20",
    )
    assert code == 2
    assert_clean_error(err, "chestxr evaluate: error: ", "export it again")


@pytest.mark.parametrize("name", ["flat.dcm", "zero16.png"])
def test_evaluate_labelled_image_without_picture_is_named(name, synth, run_dir, corpus, tmp_path, capsys):
    """A blank image inside a labelled manifest stops with its file named (never "row 99, finding 0"),
    and with --on-bad-image skip it is listed, not scored."""
    manifest = with_row_replaced(synth, tmp_path / "m.csv", corpus[name], split="test")
    args = ["evaluate", "--checkpoint", str(run_dir), "--manifest", str(manifest), "--split", "test",
            "--workers", "0", "--bootstrap", "20"]  # fmt: skip
    code, out, err = cli(capsys, *args, "--out", str(tmp_path / "e"))
    assert code == 2
    assert_clean_error(err, f"chestxr evaluate: error: {corpus[name]}: image is constant", "--on-bad-image skip")
    code, out, err = cli(capsys, *args, "--out", str(tmp_path / "e2"), "--on-bad-image", "skip")
    assert code == 0, err
    predictions = pd.read_csv(tmp_path / "e2" / "predictions.csv")
    assert name not in " ".join(predictions["path"].astype(str))
    info = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert info["model_info"]["n_skipped"] == 1
