"""SR (and heat-map) text values valid for their VR (issue 24.6): non-ASCII reviewer, finding, run and patient
names, a backslash, a newline, an 80-character finding name. dcmtk's dsrdump and dicom3tools' dciodvfy (Debian
packages dcmtk, dicom3tools; scripts/install_dicom_tools.sh) must report no error; the test skips without them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("highdicom")

from pacs_helpers import synthetic_studies  # noqa: E402

from chestxr.evaluation import Guarantee, OperatingPoint  # noqa: E402
from chestxr.pacs import build_sr  # noqa: E402
from chestxr.pacs._dicom_text import lo, text  # noqa: E402
from chestxr.pacs._staging import read_evidence  # noqa: E402
from chestxr.runs import ApprovalStatus  # noqa: E402

ODD_FINDINGS = [
    "Opacity",
    "Pleural\\Effusion",
    "Ödem (Lunge) – links",
    "X" * 80,
    "Nodule\r\nnew",
    "=cmd|x",
    "肺炎",
]
REVIEWER = "Dr Zoë Łukasiewicz-Núñez 李"
PATIENT = "Müller^Jörg"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt-get install dcmtk dicom3tools; scripts/install_dicom_tools.sh)")
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, timeout=60)
    lines = (out.stdout + out.stderr).decode("latin-1").splitlines()
    return [ln for ln in lines if ln.startswith(("Error", "Abort"))]


def dsrdump_errors(path: Path) -> list[str]:
    out = subprocess.run([_tool("dsrdump"), str(path)], capture_output=True, timeout=60)
    lines = out.stderr.decode("latin-1").splitlines()
    bad = [ln for ln in lines if ln.startswith(("E:", "F:"))]
    return bad + ([f"exit {out.returncode}"] if out.returncode else [])


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    """One study's image headers, the patient's name written in ISO_IR 100 (Latin-1) as many archives do."""
    folder = tmp_path_factory.mktemp("sr_text")
    studies = synthetic_studies(folder, n_images=4)
    files = sorted(studies.items())[0][1]
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = PATIENT
        ds.save_as(f, enforce_file_format=True)
    return read_evidence(files)


def _sr(evidence, findings, *, reviewer="Dr A", run_name="run"):
    points = [
        OperatingPoint(
            f,
            method="sensitivity:0.9",
            threshold=0.5,
            status="guaranteed",
            guarantee=Guarantee("sensitivity", 0.9, 0.95, status="guaranteed", lower_bound=0.91),
        )
        for f in findings
    ]
    return build_sr(
        evidence,
        identity={"name": f"chestxr tiny ({run_name})", "version": "3", "weights_sha256": "ab" * 32},
        points=points,
        approval=ApprovalStatus("approved", reviewer, "2026-01-01T00:00:00Z"),
        study_probs={f: 0.3 for f in findings},
        study_calls={f: "positive" for f in findings},
        image_probs={str(d.SOPInstanceUID): {f: 0.2 for f in findings} for d in evidence},
    )


@pytest.mark.parametrize("case", ["plain", "odd"])
def test_sr_text_values_pass_dsrdump_and_dciodvfy(case, evidence, tmp_path):
    if case == "plain":
        sr = _sr(evidence, ["Opacity", "Cardiomegaly"])
    else:
        sr = _sr(evidence, ODD_FINDINGS, reviewer=REVIEWER, run_name="rün\\dir Ä\nÖ")
    path = tmp_path / f"{case}.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dsrdump_errors(path) == []
    assert dciodvfy_errors(path) == []
    back = pydicom.dcmread(path)
    assert str(back.PatientName) == PATIENT  # not "M?ller^J?rg"
    meanings = [str(e.value) for e in back.iterall() if e.keyword == "CodeMeaning"]
    assert all("\\" not in m and "\n" not in m and len(m.encode()) <= 64 for m in meanings)
    if case == "odd":
        assert back.SpecificCharacterSet == "ISO_IR 192"
        assert any(REVIEWER[:20] in m for m in meanings)
        assert "Pleural/Effusion" in meanings and "Ödem (Lunge) – links" in meanings and "肺炎" in meanings
        identifiers = {str(e.value) for e in back.iterall() if e.keyword == "TextValue"}
        assert "Pleural\\Effusion" in identifiers and "X" * 80 in identifiers and "Nodule new" in identifiers


def test_heatmap_secondary_capture_text_is_valid(evidence, tmp_path):
    from chestxr.pacs import build_heatmap_sc

    source = pydicom.dcmread(evidence[0].filename)
    rgb = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    sc = build_heatmap_sc(source, rgb, finding="Ödem\\links\n肺炎", weights_sha256="ab" * 32, number=1)
    path = tmp_path / "sc.dcm"
    sc.save_as(path, enforce_file_format=True)
    # text values only: dciodvfy also asks for Laterality (Type 2C, for paired body parts), not a text matter
    assert [e for e in dciodvfy_errors(path) if "Laterality" not in e] == []
    back = pydicom.dcmread(path)
    assert back.SpecificCharacterSet == "ISO_IR 192" and str(back.PatientName) == PATIENT
    assert "\n" not in back.ImageComments and "Ödem\\links 肺炎" in back.ImageComments


@pytest.mark.parametrize(
    "value, expected",
    [
        ("a\\b", "a/b"),
        ("a\r\n\tb", "a b"),
        ("", "?"),
        ("é" * 40, "é" * 30 + "..."),  # 64 bytes of UTF-8 at most
        ("x" * 70, "x" * 61 + "..."),
    ],
)
def test_lo_values(value, expected):
    assert lo(value) == expected
    assert len(lo(value).encode()) <= 64


def test_text_keeps_backslash_one_line():
    assert text("a\\b\nc") == "a\\b c"
