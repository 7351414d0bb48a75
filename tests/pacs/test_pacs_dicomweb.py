"""``chestxr predict --dicomweb`` against a real Orthanc: retrieve, predict as on a folder, store SRs back.

The SR is read back from Orthanc with pydicom and checked value by value against the CSVs; heat maps come
back as labelled Secondary Captures; unreachable / 401 / timeout / credentials in the URL fail with one
line, exit 2 and nothing written.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from io import BytesIO

import pandas as pd
import pydicom
import pytest

pytest.importorskip("highdicom")
pytest.importorskip("dicomweb_client")

from pacs_helpers import FINDINGS, lateral_copy, make_run, probs_close, read_sr, synthetic_studies  # noqa: E402
from privacy_helpers import NEEDLES, leaks, mark_dicoms  # noqa: E402

from chestxr.cli import main  # noqa: E402
from chestxr.pacs import Keyer  # noqa: E402


@pytest.fixture(scope="module")
def pacs_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("pacs_run") / "run")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Synthetic studies with marker identifiers, plus a lateral (refused by the run's view check)."""
    folder = tmp_path_factory.mktemp("pacs_studies")
    by_study = synthetic_studies(folder, n_images=8)
    images = folder / "images"
    mark_dicoms(images)
    first = sorted(by_study)[0]
    by_study[first].append(lateral_copy(by_study[first][0], images / "zz_lateral.dcm"))
    return by_study


@pytest.fixture()
def loaded(orthanc, studies, monkeypatch):
    orthanc.clear()
    for files in studies.values():
        for f in files:
            orthanc.upload(f)
    for k, v in orthanc.env.items():
        monkeypatch.setenv(k, v)
    return orthanc


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def sr_instances(orthanc, study_uid: str) -> list[pydicom.Dataset]:
    return [
        pydicom.dcmread(BytesIO(orthanc.file(i["ID"])))
        for i in orthanc.instances(study_uid)
        if i.get("Modality") == "SR"
    ]


def per_study(frame: pd.DataFrame, groups) -> set:
    """{(sorted per-image probability vectors) per study}: comparable whatever the study keys are."""
    cols = [f"prob_{f}" for f in FINDINGS]
    return {tuple(sorted(tuple(r) for r in g[cols].to_numpy().tolist())) for _, g in frame.groupby(groups)}


def test_predict_over_dicomweb_equals_folder_predict_and_sr_matches_csv(loaded, studies, pacs_run, tmp_path, capsys):
    from chestxr.pacs import load_credentials, predict_dicomweb

    out, keyer = tmp_path / "pull", Keyer(b"k" * 32)  # the Python API, with a known key to map studies
    predict_dicomweb(pacs_run, loaded.dicomweb, out, credentials=load_credentials(), store_sr=True, keyer=keyer)
    # the same images predicted from a folder give the same probabilities, image by image and study by study
    folder = tmp_path / "folder"
    folder.mkdir()
    for files in studies.values():
        for f in files:
            if "lateral" not in f.name:
                shutil.copy(f, folder / f.name)
    code, ftext = cli(
        capsys, "predict", "--checkpoint", str(pacs_run), str(folder), "--out", str(tmp_path / "f"), "--workers", "0"
    )
    assert code == 0, ftext
    pulled, local = pd.read_csv(out / "predictions.csv"), pd.read_csv(tmp_path / "f" / "predictions.csv")
    assert len(pulled) == len(local) == sum(len(fs) for fs in studies.values()) - 1
    assert per_study(pulled, pulled["image_id"].str.split("/").str[0]) == per_study(local, local["study_id"])
    pull = pd.read_csv(out / "study_predictions.csv")
    assert len(pull) == len(studies)
    # the lateral is listed with the reason, the others were predicted
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(skipped) == 1 and "ViewPosition" in skipped["reason"][0] and "'LL'" in skipped["reason"][0]
    stored = pd.read_csv(out / "stored.csv")
    assert stored["sr_stored"].tolist() == [1] * len(studies)

    images = pd.read_csv(out / "predictions.csv")
    meta = json.loads((pacs_run / "model.json").read_text())
    thresholds = {r["finding"]: r["threshold"] for r in meta["thresholds"]}
    for uid, files in studies.items():
        sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files if "lateral" not in f.name]
        srs = sr_instances(loaded, uid)
        assert len(srs) == 1
        sr = srs[0]
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
        assert sr.StudyInstanceUID == uid and sr.PatientID == sources[0].PatientID
        assert str(sr.PatientName) == str(sources[0].PatientName)
        assert sr.SOPInstanceUID not in {s.SOPInstanceUID for s in sources}
        assert sr.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
        evidence = {
            str(i.ReferencedSOPInstanceUID)
            for s in sr.CurrentRequestedProcedureEvidenceSequence
            for se in s.ReferencedSeriesSequence
            for i in se.ReferencedSOPSequence
        }
        assert evidence == {str(s.SOPInstanceUID) for s in sources}
        rows = images[images["image_id"].str.startswith(keyer.study(sources[0]) + "/")]
        srow = pull[pull["study_id"] == rows["study_id"].iloc[0]].iloc[0]
        content = read_sr(sr)
        assert sorted(content) == sorted(FINDINGS)
        for f in FINDINGS:
            rec = content[f]
            assert probs_close(rec["Probability of finding"], srow[f"prob_{f}"])
            assert probs_close(rec["Decision threshold"], thresholds[f])
            assert rec["Call at stored threshold"] == ("Positive" if srow[f"call_{f}"] == "positive" else "Negative")
            assert rec["Threshold approval status"] == "not approved"
            by_image = {keyer.instance(str(s.SOPInstanceUID)): rec["images"][str(s.SOPInstanceUID)] for s in sources}
            assert len(rec["images"]) == len(sources) == len(rows)
            for image_id, p in zip(rows["image_id"], rows[f"prob_{f}"]):
                assert probs_close(by_image[image_id.split("/")[1].removesuffix(".dcm")], p)
            assert rec["sources"] == {str(s.SOPInstanceUID) for s in sources}
            assert f"weights_sha256={meta['weights_sha256']}" in rec["params"]
            if f == "Opacity":
                assert rec["Threshold guarantee"] == "guaranteed: sensitivity >= 0.8, bound 0.812 (95% one-sided)"
                assert probs_close(rec["Guarantee lower bound"], 0.8123)
            else:
                assert rec["Threshold guarantee"] == "no guarantee" and "Guarantee lower bound" not in rec
    # chestxr's own files and what it printed hold no identifier, no credential; no staging left behind
    assert leaks(out) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # storing again files nothing twice (SR UIDs derive from study, images and model)
    code, text = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(pacs_run),
        "--dicomweb",
        loaded.dicomweb,
        "--out",
        str(out),
        "--store-sr",
        "--overwrite",
        "--workers",
        "0",
    )
    assert code == 0, text
    assert [m for m in NEEDLES if m.decode() in text] == [] and loaded.password not in text
    assert all(len(sr_instances(loaded, uid)) == 1 for uid in studies)
    assert leaks(out) == []


def test_heatmaps_are_labelled_secondary_captures(loaded, studies, pacs_run, tmp_path, capsys):
    out = tmp_path / "pull"
    code, text = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(pacs_run),
        "--dicomweb",
        loaded.dicomweb,
        "--out",
        str(out),
        "--store-heatmaps",
        "--workers",
        "0",
    )
    assert code == 0, text
    images = pd.read_csv(out / "predictions.csv")
    positives = int(sum((images[f"call_{f}"] == "positive").sum() for f in FINDINGS))
    assert positives > 0
    found = [i for uid in studies for i in loaded.instances(uid) if i.get("Modality") == "OT"]
    assert len(found) == positives
    ds = pydicom.dcmread(BytesIO(loaded.file(found[0]["ID"])))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription and "NOT FOR DIAGNOSTIC USE" in ds.ImageComments
    assert ds.BurnedInAnnotation == "YES" and ds.pixel_array.shape == (512, 512, 3)
    assert ds.StudyInstanceUID in studies and ds.PatientID.startswith("ZZPIDZZ")
    assert leaks(out) == []
    assert [m for m in NEEDLES if m.decode() in text] == []  # no library warning quoting a header value


def test_filters_since_modality_study(loaded, studies, pacs_run, tmp_path, capsys):
    first = sorted(studies)[0]
    code, text = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(pacs_run),
        "--dicomweb",
        loaded.dicomweb,
        "--out",
        str(tmp_path / "one"),
        "--study",
        first,
        "--workers",
        "0",
    )
    assert code == 0, text
    assert len(pd.read_csv(tmp_path / "one" / "study_predictions.csv")) == 1
    code, text = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(pacs_run),
        "--dicomweb",
        loaded.dicomweb,
        "--out",
        str(tmp_path / "mod"),
        "--modality",
        "MR",
        "--workers",
        "0",
    )
    assert code == 2 and "no study matches" in text and not (tmp_path / "mod").exists()
    modalities = sorted({pydicom.dcmread(f, stop_before_pixels=True).Modality for fs in studies.values() for f in fs})
    code, text = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(pacs_run),
        "--dicomweb",
        loaded.dicomweb,
        "--out",
        str(tmp_path / "all"),
        "--modality",
        ",".join(modalities),
        "--since",
        "1999-12-31",
        "--workers",
        "0",
    )
    assert code == 0, text
    assert len(pd.read_csv(tmp_path / "all" / "study_predictions.csv")) == len(studies)
    code, text = cli(
        capsys,
        "predict",
        "--checkpoint",
        str(pacs_run),
        "--dicomweb",
        loaded.dicomweb,
        "--out",
        str(tmp_path / "late"),
        "--since",
        "2000-01-02",
        "--workers",
        "0",
    )
    assert code == 2 and "no study matches" in text


class _Silent:
    """A TCP server that accepts connections and never answers (a hung PACS)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["unreachable", "401", "timeout", "url-credentials"])
def test_pacs_errors_are_one_line_and_write_nothing(case, orthanc, pacs_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHESTXR_PACS_USER", orthanc.user)
    monkeypatch.setenv("CHESTXR_PACS_PASSWORD", orthanc.password)
    url, expect, extra, silent = orthanc.dicomweb, "", [], None
    if case == "unreachable":
        url, expect = f"http://127.0.0.1:{_free_port()}/dicom-web", "cannot connect"
    elif case == "401":
        monkeypatch.setenv("CHESTXR_PACS_PASSWORD", "wrong-password-xyz")
        expect = "refused the credentials (HTTP 401)"
    elif case == "timeout":
        silent = _Silent()
        url, expect, extra = f"http://127.0.0.1:{silent.port}/dicom-web", "no answer within 0.5 s", ["--timeout", "0.5"]
    else:
        url, expect = (
            f"http://{orthanc.user}:{orthanc.password}@127.0.0.1:{orthanc.http_port}/dicom-web",
            "must not hold",
        )
    out = tmp_path / "sub" / "out"
    try:
        code, text = cli(capsys, "predict", "--checkpoint", str(pacs_run), "--dicomweb", url, "--out", str(out), *extra)
    finally:
        if silent:
            silent.close()
    assert code == 2
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and expect in lines[0], text
    assert orthanc.password not in text and "wrong-password-xyz" not in text
    assert not out.exists() and (not out.parent.exists() or list(out.parent.iterdir()) == [])
