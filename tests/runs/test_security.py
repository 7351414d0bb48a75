"""Untrusted files end to end: crafted pickles posing as checkpoints are refused before anything is
unpickled, broken model.json files give clear errors, hostile manifest strings cannot make the tool
write outside --out, and every string from manifests, file names and DICOM headers is HTML-escaped."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_args
from dicom_factory import block_image, make_dataset

from chestxr.cli import main

TINY = tiny_args()
XSS = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(2)>"
HEADER_XSS = "<script>alert(99)</script>"


class MarkerPayload:
    """Unpickling this creates ``path`` (the proof that code ran)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def synth(synth_manifest) -> Path:
    """The session's synthetic manifest (tests/conftest.py)."""
    return synth_manifest


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """The session's tiny trained run (tests/conftest.py); read-only."""
    return tiny_run


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_image(synth: Path) -> str:
    return str(sorted((synth.parent / "images").glob("*.png"))[0])


# ----------------------------------------------------------------------------- crafted checkpoints


def test_payload_really_runs_code_when_unpickled(tmp_path):
    """The control: the payload used below does create its marker when something unpickles it."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(MarkerPayload(marker), protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("kind", ["pickle-protocol-2", "pickle-protocol-0", "torch.save"])
def test_pickled_checkpoint_is_refused(kind, run_dir, synth, tmp_path, capsys):
    crafted = tmp_path / "crafted"
    shutil.copytree(run_dir, crafted)
    marker = tmp_path / "MARKER"
    payload = {"head.weight": MarkerPayload(marker)}
    if kind == "torch.save":
        torch.save(payload, crafted / "model.safetensors")
    else:
        (crafted / "model.safetensors").write_bytes(pickle.dumps(payload, protocol=2 if kind.endswith("2") else 0))
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(crafted),
        one_image(synth),
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "0",
    )
    assert code == 2
    assert f"{crafted / 'model.safetensors'}: " in err and "Traceback" not in err
    expected = "not a safetensors file" if kind.endswith("0") else "refuses to load it because unpickling can run"
    assert expected in err
    # the same file as resumable training state
    shutil.copy(crafted / "model.safetensors", crafted / "last" / "state.safetensors")
    code, out, err = cli(capsys, "train", "--manifest", str(synth), "--out", str(crafted), "--resume", *TINY)
    assert code == 2 and f"{crafted / 'last' / 'state.safetensors'}: " in err
    # and as --weights for a new run: torch.load(weights_only=True) refuses the global
    if kind == "torch.save":
        code, out, err = cli(
            capsys,
            "train",
            "--manifest",
            str(synth),
            "--out",
            str(tmp_path / "w"),
            *TINY,
            "--weights",
            str(crafted / "model.safetensors"),
        )
        assert code == 2 and "refused it" in err and "it references io.open" in err
        assert "\x1b[" not in err
    assert not marker.exists()


@pytest.mark.parametrize(
    "text, phrase",
    [
        ("{not json", "cannot read JSON"),
        ("[1, 2]", "expected a JSON object at the top level"),
        ('{"findings": 5, "backbone": "tiny", "mode": "multilabel"}', "'findings' must be a non-empty list"),
        (None, "'in_channels' must be an integer"),
        ('{"findings": ["A"], "backbone": "__import__(\'os\')", "mode": "multilabel"}', "unknown backbone"),
    ],
)
def test_broken_model_json_is_a_clear_error(text, phrase, run_dir, synth, tmp_path, capsys):
    crafted = tmp_path / "crafted"
    shutil.copytree(run_dir, crafted)
    if text is None:
        meta = json.loads((run_dir / "model.json").read_text())
        text = json.dumps({**meta, "in_channels": None})
    (crafted / "model.json").write_text(text)
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(crafted),
        one_image(synth),
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "0",
    )
    assert code == 2
    assert f"chestxr predict: error: {crafted / 'model.json'}: " in err and phrase in err
    assert "Traceback" not in err


def test_model_json_binary_garbage(run_dir, synth, tmp_path, capsys):
    crafted = tmp_path / "crafted"
    shutil.copytree(run_dir, crafted)
    (crafted / "model.json").write_bytes(b"\xff\xfe\x00\x80garbage")
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(crafted),
        one_image(synth),
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "0",
    )
    assert code == 2 and "model.json: cannot read JSON" in err


# ----------------------------------------------------------------------------- hostile manifests


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file and folder under root, except under ``skip``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if any(p == s or s in p.parents for s in skip):
                continue
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def hostile(synth) -> Path:
    """A manifest whose IDs are path traversals / markup and whose paths leave the manifest's folder."""
    root = synth.parent.parent
    frame = pd.read_csv(synth, dtype=str, keep_default_na=False).drop(columns=["split"], errors="ignore")
    outside = root / "elsewhere"
    outside.mkdir(exist_ok=True)
    shutil.copy(
        synth.parent / frame.loc[0, "path"],
        outside / "x.png" if frame.loc[0, "path"].endswith(".png") else outside / "x.dcm",
    )
    frame.loc[0, "path"] = "../elsewhere/" + next(outside.iterdir()).name
    frame.loc[1, "path"] = "images/../images/" + Path(frame.loc[1, "path"]).name
    ids = ["../../../OWNED", "/tmp/OWNED_ABS", XSS, XSS_IMG, "a/b\\c/../../OWNED", "..", "."]
    for i in range(len(frame)):
        k = i // 4 % len(ids)  # a few images per hostile patient
        frame.loc[i, "patient_id"] = ids[k]
        frame.loc[i, "study_id"] = ids[(k + 1) % len(ids)] + f"/../study{i // 2}"
        frame.loc[i, "view"] = XSS if i % 2 else "PA"
        frame.loc[i, "sex"] = XSS_IMG if i % 3 == 0 else frame.loc[i, "sex"]
    frame["site"] = [XSS if i % 2 else "../../site" for i in range(len(frame))]
    out = root / "hostile" / "manifest.csv"
    out.parent.mkdir(exist_ok=True)
    frame.to_csv(out, index=False)
    shutil.copytree(synth.parent / "images", out.parent / "images")
    return out


def test_hostile_manifest_writes_only_inside_out(hostile, run_dir, tmp_path, monkeypatch, capsys):
    root = hostile.parent.parent
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    outs = (tmp_path / "pred", tmp_path / "eval", tmp_path / "cache")
    before_root, before_tmp = snapshot(root), snapshot(tmp_path)
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(run_dir),
        "--manifest",
        str(hostile),
        "--out",
        str(outs[0]),
        "--workers",
        "0",
        "--explain",
    )
    assert code == 0, err
    code, out, err = cli(
        capsys,
        "evaluate",
        "--checkpoint",
        str(run_dir),
        "--manifest",
        str(hostile),
        "--out",
        str(outs[1]),
        "--workers",
        "0",
        "--bootstrap",
        "10",
    )
    assert code == 0, err
    code, out, err = cli(
        capsys,
        "cache",
        "build",
        str(hostile),
        "--cache-dir",
        str(outs[2]),
        "--workers",
        "1",
        "--set",
        "preprocessing.cache_size=48",
        "--set",
        "preprocessing.size=32",
    )
    assert code == 0, err
    assert snapshot(root) == before_root  # the data, the run and the manifest's folders are untouched
    assert snapshot(tmp_path, skip=outs) == before_tmp
    assert list(cwd.iterdir()) == []
    assert not Path("/tmp/OWNED_ABS").exists()
    written = sorted(str(p.relative_to(tmp_path)) for d in outs[:2] for p in d.rglob("*"))
    assert written == [
        "eval/metrics.csv",
        "eval/metrics.json",
        "eval/predictions.csv",
        "eval/report.html",
        "pred/predictions.csv",
        "pred/review.html",
        "pred/study_predictions.csv",
    ]
    # cache entries are named by a hash only
    names = [str(p.relative_to(outs[2])) for p in outs[2].rglob("*") if p.is_file()]
    assert names and all(re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{64}\.npy", n) for n in names), names
    predictions = pd.read_csv(outs[0] / "predictions.csv", dtype=str, keep_default_na=False)
    assert Path(predictions["path"].iloc[0]).parent == root / "elsewhere"  # outside the manifest folder: absolute
    assert set(predictions["patient_id"]) >= {"../../../OWNED", XSS}


def assert_escaped(html: str, *raw: str) -> None:
    """No markup from the data survives; each raw string appears in its escaped form."""
    assert "<script" not in html.lower()
    assert "onerror=" not in html.replace("onerror=alert(2)&gt;", "")
    for text in raw:
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert escaped in html, escaped


def test_reports_escape_manifest_strings(hostile, run_dir, tmp_path, capsys):
    code, out, err = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(run_dir),
        "--manifest",
        str(hostile),
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "0",
    )
    assert code == 0, err
    review = (tmp_path / "p" / "review.html").read_text()
    assert_escaped(review, XSS, XSS_IMG)
    code, out, err = cli(
        capsys,
        "evaluate",
        "--checkpoint",
        str(run_dir),
        "--manifest",
        str(hostile),
        "--out",
        str(tmp_path / "e"),
        "--workers",
        "0",
        "--bootstrap",
        "10",
    )
    assert code == 0, err
    report = (tmp_path / "e" / "report.html").read_text()
    # views are normalised to upper case; sex and site are shown as given (subgroup tables)
    assert_escaped(report, XSS.upper(), XSS_IMG, XSS)


def test_review_escapes_dicom_headers_and_file_names(tmp_path, run_dir, capsys):
    folder = tmp_path / XSS_IMG  # no manifest and no StudyInstanceUID: each image is its own study
    folder.mkdir()
    for i in range(2):
        ds = make_dataset(block_image())
        del ds.StudyInstanceUID
        for keyword in ("SeriesDescription", "StudyDescription", "InstitutionName", "PatientName"):
            setattr(ds, keyword, HEADER_XSS)
        ds.save_as(folder / f"<svg onload=alert({i})>.dcm", enforce_file_format=True)
    code, out, err = cli(
        capsys, "predict", "--checkpoint", str(run_dir), str(folder), "--out", str(tmp_path / "p"), "--workers", "0"
    )
    assert code == 0, err
    review = (tmp_path / "p" / "review.html").read_text()
    assert_escaped(review, "<svg onload=alert(0)>.dcm", "<svg onload=alert(1)>.dcm")
    assert "<svg onload" not in review
    assert "alert(99)" not in review  # the DICOM header strings are not shown at all
