"""Patients: keyed training-patient hashes (18.8), one ID comparison rule (17.5), leakage always named
(18.2), the user's split kept (18.1), study IDs shared by patients flagged (18.3)."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import warnings
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_args

from chestxr.cli import main
from chestxr.core import ManifestError, config_from_dict

TINY = tiny_args()
INF = ["--workers", "0", "--bootstrap", "20"]


@pytest.fixture(scope="module")
def synth(synth_manifest) -> Path:
    """The session's synthetic manifest (tests/conftest.py)."""
    return synth_manifest


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """The session's tiny trained run (tests/conftest.py); read-only."""
    return tiny_run


def train_ids(synth) -> list[str]:
    frame = pd.read_csv(synth, dtype=str)
    return sorted(set(frame.loc[frame["split"] == "train", "patient_id"]))


def write_variant(synth: Path, dest: Path, split: str, change) -> Path:
    """A copy of the manifest's ``split`` rows (absolute paths) with patient_id changed by ``change``."""
    frame = pd.read_csv(synth, dtype=str, keep_default_na=False)
    frame = frame[frame["split"] == split].copy()
    frame["path"] = [str(synth.parent / p) for p in frame["path"]]
    frame["patient_id"] = [change(p) for p in frame["patient_id"]]
    frame.to_csv(dest, index=False)
    return dest


# ----------------------------------------------------------------------------- 18.8 keyed hashes


def test_model_json_alone_reveals_no_training_patient(run_dir, synth):
    text = (run_dir / "model.json").read_text()
    meta = json.loads(text)
    stored = set(meta["training_patients_sha"])
    ids = train_ids(synth)
    assert len(stored) == len(ids)
    # the attack that recovered all 52 IDs: hash candidate IDs with the fixed, public salt
    for candidate in ids + [i.upper() for i in ids]:
        for salt in ("chestxr", ""):
            digest = hashlib.sha256(f"{salt}:{candidate}".encode()).hexdigest()
            assert digest[:16] not in stored and digest[:32] not in stored and digest not in stored
    key_file = run_dir / "patient_hash.key"
    assert key_file.is_file() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(bytes.fromhex(key)) == 32 and key not in text  # the secret is not in model.json
    assert meta["patient_hash"]["scheme"] == "hmac-sha256-v1" and meta["patient_hash"]["key_file"] == key_file.name


def test_each_run_gets_its_own_key(tmp_path):
    from chestxr.runs import training_patient_record

    a = training_patient_record(tmp_path / "a", ["p1", "p2"])
    b = training_patient_record(tmp_path / "b", ["p1", "p2"])
    assert not set(a.hashes) & set(b.hashes)


def test_overlap_check_works_for_the_owner_and_is_unknown_without_the_key(run_dir, synth, tmp_path, capsys):
    code = main(["calibrate", "--checkpoint", str(run_dir), "--manifest", str(synth), "--split", "train", *INF])
    assert code == 2 and "in the model's training data" in capsys.readouterr().err
    shared = tmp_path / "shared"  # what a colleague gets: model.json + weights, no key
    shared.mkdir()
    for name in ("model.json", "model.safetensors"):
        shutil.copy(run_dir / name, shared / name)
    with pytest.warns(UserWarning, match="unknown"):
        from chestxr.imaging import IN_PROCESS
        from chestxr.runs import evaluate_run

        written = evaluate_run(shared, synth, tmp_path / "ev", split="train", n_boot=20, loading=IN_PROCESS)
    info = json.loads(written.metrics_json.read_text())["model_info"]
    assert (
        info["training_patient_overlap"] is None
        and "patient_hash.key is missing" in info["training_patient_overlap_text"]
    )


def test_old_fixed_salt_run_still_checked_with_warning(run_dir, synth, tmp_path):
    from chestxr.imaging import IN_PROCESS
    from chestxr.runs import calibrate_run, legacy_patient_hashes

    old = tmp_path / "old"
    old.mkdir()
    for name in ("model.json", "model.safetensors"):
        shutil.copy(run_dir / name, old / name)
    meta = json.loads((old / "model.json").read_text())
    meta.pop("patient_hash")
    meta["training_patients_sha"] = legacy_patient_hashes(train_ids(synth))
    (old / "model.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="old fixed salt"):
        with pytest.raises(Exception, match="in the model's training data"):
            calibrate_run(old, synth, split="train", n_boot=20, loading=IN_PROCESS)


# ----------------------------------------------------------------------------- 17.5 one comparison rule


@pytest.mark.parametrize("change", [str.upper, lambda p: f" {p.upper()}  "], ids=["upper", "upper+spaces"])
def test_overlap_check_not_fooled_by_case_or_spaces(run_dir, synth, tmp_path, change, capsys):
    m = write_variant(synth, tmp_path / "m.csv", "train", change)
    code = main(["calibrate", "--checkpoint", str(run_dir), "--manifest", str(m), *INF])
    assert code == 2 and "in the model's training data" in capsys.readouterr().err
    assert json.loads((run_dir / "model.json").read_text())["thresholds"] is None  # nothing moved


def test_validate_warns_about_ids_differing_by_case_or_whitespace(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    m = tmp_path / "m.csv"
    m.write_text("path,patient_id,study_id,Opacity\na.png,P001,s1,1\nb.png,p001,s2,0\nc.png,P002,s3,0\n")
    from chestxr.data import validate_manifest

    result = validate_manifest(m, check_paths=False)
    msgs = [str(w) for w in result.warnings]
    assert any("differ only by case or whitespace" in w and "'P001'" in w and "'p001'" in w for w in msgs), msgs
    assert not any("P002" in w for w in msgs if "differ only" in w)


def test_split_keeps_case_variants_of_one_patient_together(tmp_path):
    from chestxr.data import read_manifest, split_manifest

    rows = ["path,patient_id,Opacity"]
    for i in range(30):
        rows += [f"a{i}.png,P{i:03d},{i % 2}", f"b{i}.png,p{i:03d} ,{i % 2}"]
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = read_manifest(tmp_path / "m.csv", check_paths=False)
    frame = split_manifest(m, val=0.2, test=0.2, seed=0).frame
    key = frame["patient_id"].str.strip().str.casefold()
    assert (frame.groupby(key)["split"].nunique() == 1).all()


def test_validate_refuses_a_patient_in_two_splits_whatever_the_case(tmp_path):
    from chestxr.data import validate_manifest

    (tmp_path / "m.csv").write_text("path,patient_id,split,Opacity\na.png,P001,train,1\na.png,p001,test,0\n")
    result = validate_manifest(tmp_path / "m.csv", check_paths=False)
    assert any("more than one split" in str(e) for e in result.errors)


# ----------------------------------------------------------------------------- 18.2 leakage named


def test_evaluate_on_training_patients_carries_a_red_banner(run_dir, synth, tmp_path, capsys):
    out = tmp_path / "ev-train"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run_dir),
                "--manifest",
                str(synth),
                "--split",
                "train",
                "--out",
                str(out),
                *INF,
            ]
        )
        == 0
    )
    cap = capsys.readouterr()
    n = len(train_ids(synth))
    assert f"training-patient overlap: {n} of {n} patients" in cap.out
    html = (out / "report.html").read_text()
    assert 'id="leak-warning"' in html and f"{n} of {n} patients" in html
    assert json.loads((out / "metrics.json").read_text())["model_info"]["training_patient_overlap"] == n

    clean = tmp_path / "ev-test"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run_dir),
                "--manifest",
                str(synth),
                "--split",
                "test",
                "--out",
                str(clean),
                *INF,
            ]
        )
        == 0
    )
    html = (clean / "report.html").read_text()
    assert 'id="leak-warning"' not in html and "Training-patient overlap: 0 of" in html
    assert "training-patient overlap: 0 of" in capsys.readouterr().out

    # the model card states each evaluation's overlap, with the banner on the leaky one
    card = tmp_path / "card"
    assert main(["card", str(run_dir), "--out", str(card), "--eval", str(out), "--eval", str(clean)]) == 0
    page = (card / "model_card.html").read_text()
    assert page.count("evaluation-leak") == 1 and f"Training-patient overlap: {n} of {n} patients" in page
    assert "Training-patient overlap: 0 of" in page
    md = (card / "model_card.md").read_text()
    assert f"**Training-patient overlap: {n} of {n} patients**" in md and "Training-patient overlap: 0 of" in md


def test_calibrate_states_the_overlap(run_dir, synth, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert main(["calibrate", "--checkpoint", str(run), "--manifest", str(synth), "--split", "val", *INF]) == 0
    assert "training-patient overlap: 0 of" in capsys.readouterr().out
    data = json.loads((run / "thresholds.json").read_text())
    assert data["training_patient_overlap"] == 0 and data["model_version"] == 2
    card = tmp_path / "card"
    assert main(["card", str(run), "--out", str(card)]) == 0
    assert "training-patient overlap: <span" in (card / "model_card.html").read_text()
    assert "training-patient overlap: 0 of" in (card / "model_card.md").read_text()


def cfg(manifest, **data):
    return config_from_dict(
        {"name": "t", "data": {"manifest": str(manifest), "num_workers": 0, **data}, "model": {"backbone": "tiny"}}
    )


def test_val_manifest_with_training_patients_is_refused(synth, tmp_path):
    from chestxr.data import load_training_splits

    train = write_variant(synth, tmp_path / "train.csv", "train", lambda p: p)
    val = write_variant(synth, tmp_path / "val.csv", "train", lambda p: p.upper())  # same patients, other case
    with pytest.raises(ManifestError, match="data.val_manifest are also in the training manifest"):
        load_training_splits(cfg(train, val_manifest=str(val)))
    ok = write_variant(synth, tmp_path / "val-ok.csv", "val", lambda p: p)
    assert set(load_training_splits(cfg(train, val_manifest=str(ok)))) == {"train", "val"}


# ----------------------------------------------------------------------------- 18.1 the user's split


def test_train_test_without_val_never_moves_test_rows(synth, tmp_path):
    from chestxr.data import load_training_splits, write_manifest
    from chestxr.runs import RunFolder

    frame = pd.read_csv(synth, dtype=str, keep_default_na=False)
    frame["path"] = [str(synth.parent / p) for p in frame["path"]]
    frame["split"] = frame["split"].replace({"val": "train"})
    m = tmp_path / "m.csv"
    frame.to_csv(m, index=False)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.warns(UserWarning, match="carved out of the train rows only"):
        splits = load_training_splits(cfg(m, val_fraction=0.25))
    RunFolder(run).path.mkdir(exist_ok=True)
    write_manifest(splits.made, RunFolder(run).splits)  # what train writes: the split it made, as splits.csv

    def names(paths):
        return {Path(p).name for p in paths}

    user_test = names(frame.loc[frame["split"] == "test", "path"])
    user_train = names(frame.loc[frame["split"] == "train", "path"])
    assert names(splits["test"].paths) == user_test  # every test row stays test
    assert names(splits["val"].paths) and names(splits["val"].paths) <= user_train
    assert names(splits["train"].paths) | names(splits["val"].paths) == user_train
    written = pd.read_csv(run / "splits.csv", dtype=str, keep_default_na=False)
    assert names(written.loc[written["split"] == "test", "path"]) == user_test


def test_val_impossible_to_carve_is_refused(synth, tmp_path):
    from chestxr.data import load_training_splits

    frame = pd.read_csv(synth, dtype=str, keep_default_na=False)
    frame["path"] = [str(synth.parent / p) for p in frame["path"]]
    one = frame["patient_id"].iloc[0]
    frame["split"] = ["train" if p == one else "test" for p in frame["patient_id"]]
    m = tmp_path / "m.csv"
    frame.to_csv(m, index=False)
    with pytest.raises(ManifestError, match="val cannot be carved out of the train rows"):
        load_training_splits(cfg(m))
    code = main(["train", "--manifest", str(m), "--out", str(tmp_path / "r"), *TINY])
    assert code == 2


# ----------------------------------------------------------------------------- 18.3 shared study IDs


def test_study_id_shared_by_patients_is_a_warning(tmp_path):
    from chestxr.data import validate_manifest

    lines = ["path,patient_id,study_id,Opacity"] + [f"a.png,P{i},S1,0" for i in range(11)] + ["a.png,P0,S2,1"]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    result = validate_manifest(tmp_path / "m.csv", check_paths=False)
    msgs = [str(w) for w in result.warnings]
    assert any("'S1' is used by 11 patients" in w for w in msgs), msgs
    assert not any("'S2'" in w for w in msgs)


def test_normalize_ids_equals_normalize_id_elementwise():
    import numpy as np

    from chestxr.core import normalize_id, normalize_ids

    values = np.array([" P1", "p1", "P1 ", "Ǆ", "ǆ", "", "x y", " X Y ", "p1"], dtype=object)
    assert normalize_ids(values).tolist() == [normalize_id(v) for v in values]
    assert normalize_ids([]).tolist() == []
