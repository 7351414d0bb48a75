"""--require-approval on the paths that store results in a PACS (issue 24.1), against a real Orthanc: a void
approval files no SR (predict --dicomweb --store-sr used to ignore the flag); an approved run files SRs that say
who approved it."""

from __future__ import annotations

import json
from io import BytesIO

import pydicom
import pytest

pytest.importorskip("highdicom")
pytest.importorskip("dicomweb_client")

from pacs_helpers import make_run, read_sr, synthetic_studies  # noqa: E402

from chestxr.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    return synthetic_studies(tmp_path_factory.mktemp("approval_studies"), n_images=4)


@pytest.fixture()
def loaded(orthanc, studies, monkeypatch):
    orthanc.clear()
    for files in studies.values():
        for f in files:
            orthanc.upload(f)
    for k, v in orthanc.env.items():
        monkeypatch.setenv(k, v)
    return orthanc


def _srs(orthanc, studies) -> list[pydicom.Dataset]:
    return [
        pydicom.dcmread(BytesIO(orthanc.file(i["ID"])))
        for uid in studies
        for i in orthanc.instances(uid)
        if i.get("Modality") == "SR"
    ]


def test_a_void_approval_files_no_sr(loaded, studies, tmp_path, capsys):
    from chestxr.runs import approval_status, approve_run

    run = make_run(tmp_path / "run")
    approve_run(run, reviewer="Dr A. Radiologist")
    assert approval_status(run).state == "approved"
    meta = json.loads((run / "model.json").read_text())
    meta["findings"][0], meta["findings"][1] = meta["findings"][1], meta["findings"][0]  # two names swapped
    (run / "model.json").write_text(json.dumps(meta))
    assert approval_status(run).state == "void"
    argv = ["predict", "--checkpoint", str(run), "--dicomweb", loaded.dicomweb, "--store-sr", "--workers", "0"]
    code = main([*argv, "--out", str(tmp_path / "void"), "--require-approval"])
    err = capsys.readouterr().err
    assert code == 2 and "void" in err and "the findings or their order" in err, err
    assert _srs(loaded, studies) == [] and not (tmp_path / "void").exists()
    # approved again as it now stands: SRs are filed and say so
    approve_run(run, reviewer="Dr B. Radiologist")
    code = main([*argv, "--out", str(tmp_path / "ok"), "--require-approval"])
    assert code == 0, capsys.readouterr().err
    srs = _srs(loaded, studies)
    assert len(srs) == len(studies)
    content = read_sr(srs[0])
    assert all(rec["Threshold approval status"].startswith("approved by Dr B. Radiologist") for rec in content.values())
