"""Patient-level stratified splits, summaries and the split/describe CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestxr.cli import main
from chestxr.core import ConfigError, ManifestError
from chestxr.data import (
    Manifest,
    describe_manifest,
    format_description,
    read_manifest,
    split_manifest,
    split_summary,
    write_manifest,
)


def synthetic(n_patients=300, seed=0, findings=("Common", "Mid", "Rare", "Tiny")) -> Manifest:
    """1-4 images per patient; positives: Common ~30%, Mid ~10%, Rare 8 patients, Tiny 3 patients."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for k in range(rng.integers(1, 5)):
            rows.append(
                {
                    "path": f"/img/p{p}_{k}.png",
                    "patient_id": f"p{p}",
                    "study_id": f"p{p}_{k}",
                    "view": "PA",
                    "split": "",
                    "Common": float(rng.random() < 0.3),
                    "Mid": float(rng.random() < 0.1),
                    "Rare": float(p < 8 and k == 0),
                    "Tiny": float(p in (100, 200, 250)),
                }
            )
    frame = pd.DataFrame(rows)
    frame.loc[frame.index % 17 == 0, "Mid"] = np.nan  # some blanks
    frame.loc[frame.index % 23 == 0, "Common"] = -1.0  # some uncertain
    return Manifest(frame, list(findings), Path("/tmp/m.csv"))


def test_split_by_patient_fractions_and_positives():
    m = synthetic()
    s = split_manifest(m, val=0.1, test=0.2, seed=0)
    f = s.frame
    assert set(f["split"]) == {"train", "val", "test"}
    # no patient in two splits
    assert (f.groupby("patient_id")["split"].nunique() == 1).all()
    # image fractions roughly met
    frac = f["split"].value_counts(normalize=True)
    assert abs(frac["train"] - 0.7) < 0.03 and abs(frac["val"] - 0.1) < 0.03 and abs(frac["test"] - 0.2) < 0.03
    # every finding has positives in every split (Tiny has exactly 3 positive patients)
    pos = f.groupby("split")[list(m.findings)].apply(lambda g: (g == 1).sum())
    assert (pos > 0).all().all(), pos
    tiny_patients = f[f["Tiny"] == 1].groupby("split")["patient_id"].nunique()
    assert tiny_patients.to_dict() == {"train": 1, "val": 1, "test": 1}
    # common findings stratified close to the fractions
    common = pos["Common"] / pos["Common"].sum()
    assert abs(common["val"] - 0.1) < 0.03 and abs(common["test"] - 0.2) < 0.03
    # labels and rows are untouched; the input is not modified
    pd.testing.assert_frame_equal(f.drop(columns="split"), m.frame.drop(columns="split"))
    assert (m.frame["split"] == "").all()


def test_split_deterministic_by_seed():
    m = synthetic()
    a = split_manifest(m, val=0.1, test=0.2, seed=5).frame["split"]
    b = split_manifest(m, val=0.1, test=0.2, seed=5).frame["split"]
    c = split_manifest(m, val=0.1, test=0.2, seed=6).frame["split"]
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_split_zero_fractions_and_too_rare_warning():
    m = synthetic()
    s = split_manifest(m, val=0.25, test=0.0, seed=0)
    assert set(s.frame["split"]) == {"train", "val"}
    two = synthetic(findings=("Common", "Mid", "Rare", "Tiny"))
    two.frame.loc[two.frame["patient_id"] != "p100", "Tiny"] = 0.0  # a single positive patient
    with pytest.warns(UserWarning, match="Tiny"):
        split_manifest(two, val=0.1, test=0.2, seed=0)


@pytest.mark.parametrize("val,test", [(-0.1, 0.2), (0.5, 0.5), (1.0, 0.0), ("0.1", 0.2), (True, 0.1)])
def test_split_bad_fractions(val, test):
    with pytest.raises(ConfigError):
        split_manifest(synthetic(20), val=val, test=test, seed=0)


def test_split_needs_patient_ids():
    m = synthetic(20)
    m.frame.loc[3, "patient_id"] = ""
    with pytest.raises(ManifestError, match="patient_id"):
        split_manifest(m, val=0.1, test=0.2, seed=0)


def test_split_summary_and_describe():
    frame = pd.DataFrame(
        {
            "path": ["/a", "/b", "/c", "/d", "/e"],
            "patient_id": ["1", "1", "2", "3", "4"],
            "study_id": ["s1", "s1", "s2", "s3", "s4"],
            "view": ["PA", "LATERAL", "AP", "PA", ""],
            "split": ["train", "train", "val", "test", "train"],
            "A": [1.0, -1.0, np.nan, 0.0, 0.4],
            "B": [0.0, 0.0, 1.0, 1.0, 0.6],
        }
    )
    m = Manifest(frame, ["A", "B"], Path("/tmp/m.csv"))
    s = split_summary(m)
    assert list(s.columns) == ["train", "val", "test", "all"]
    assert s.loc["images"].tolist() == [3, 1, 1, 5] and s.loc["patients"].tolist() == [2, 1, 1, 4]
    assert s.loc["A"].tolist() == [1, 0, 0, 1] and s.loc["B"].tolist() == [1, 1, 1, 3]  # >= 0.5 counts
    d = describe_manifest(m)
    assert (d["images"], d["patients"], d["studies"]) == (5, 4, 4)
    assert d["views"] == {"PA": 2, "LATERAL": 1, "AP": 1, "(none)": 1}
    assert d["splits"] == {"train": 3, "val": 1, "test": 1}
    t = d["findings"]
    assert t.loc["A"].tolist() == [1, 1, 1, 1, 1, 3]  # positive, negative, uncertain, blank, soft, labeled
    assert t.loc["B"].tolist() == [2, 2, 0, 0, 1, 5]
    text = format_description(d)
    assert "images: 5   patients: 4   studies: 4" in text and "uncertain" in text


@pytest.mark.filterwarnings("ignore:.*column 'Tiny'")
def test_cli_split_and_describe(tmp_path, capsys):
    m = synthetic(60)
    src = tmp_path / "m.csv"
    write_manifest(m, src)
    assert main(["manifest", "split", str(src), "--val", "0.2", "--test", "0.2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    dest = tmp_path / "m.split.csv"
    assert dest.exists() and "patients" in out and "Tiny" in out
    s = read_manifest(dest, check_paths=False)
    assert set(s.frame["split"]) == {"train", "val", "test"}
    assert (s.frame.groupby("patient_id")["split"].nunique() == 1).all()
    direct = split_manifest(read_manifest(src, check_paths=False), val=0.2, test=0.2, seed=1)
    assert s.frame["split"].tolist() == direct.frame["split"].tolist()
    assert main(["manifest", "split", str(src)]) == 2  # exists: needs --overwrite
    assert main(["manifest", "split", str(src), "--out", str(src)]) == 2  # never the input
    assert "input manifest" in capsys.readouterr().err
    assert main(["manifest", "split", str(src), "--val", "0.6", "--test", "0.5", "--out", str(tmp_path / "x.csv")]) == 2
    capsys.readouterr()
    assert main(["manifest", "describe", str(dest)]) == 0
    out = capsys.readouterr().out
    assert f"images: {len(m)}" in out and "splits: train" in out and "Common" in out
    assert main(["manifest", "describe", str(dest), "--views", "lateral"]) == 2
    assert "views present" in capsys.readouterr().err


def test_real_nih_split(shared_data, tmp_path):
    """The 64 px NIH subset (several images per patient) splits cleanly by patient."""
    from chestxr.data import convert_nih

    f = convert_nih(
        shared_data / "nih14-64px" / "Data_Entry.csv", image_root=str(shared_data / "nih14-64px" / "images")
    )
    write_manifest(f, tmp_path / "nih.csv")
    m = read_manifest(tmp_path / "nih.csv")
    with pytest.warns(UserWarning, match="Hernia"):  # 2 Hernia patients: cannot fill 3 splits
        s = split_manifest(m, val=0.1, test=0.2, seed=0)
    assert (s.frame.groupby("patient_id")["split"].nunique() == 1).all()
    summary = split_summary(s)
    assert summary.loc["images", "all"] == 1000 and summary.loc["patients", "all"] == 264
    # every finding with at least 3 positive patients has a positive in every split
    pos_patients = s.frame.groupby("patient_id")[s.findings].max().eq(1).sum()
    for finding in s.findings:
        if pos_patients[finding] >= 3:
            assert (summary.loc[finding, ["train", "val", "test"]] > 0).all(), finding
