"""`chestxr predict --engine ray` end to end: the same predictions.csv / study_predictions.csv / skipped.csv
as plain predict (probabilities within 1e-6, identical calls) on PNG + DICOM + bad files, Parquet parts, a
job folder that a rerun resumes after a SIGKILL without scoring anything twice, and its refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestxr.cli import main

RAY_ARGS = ["--engine", "ray", "--batch-size", "4", "--on-bad-image", "skip"]


@pytest.fixture(scope="module")
def folder(synth_manifest, tmp_path_factory) -> Path:
    """A folder of the session's images (PNG and DICOM, in subfolders), a garbage .png, a README."""
    src = synth_manifest.parent / "images"
    dst = tmp_path_factory.mktemp("ray-cli") / "studies"
    shutil.copytree(src, dst)
    (dst / "garbage.png").write_bytes(b"not a png")
    (dst / "README.txt").write_text("not an image\n")
    return dst


def _local_ray_env(tag: str) -> dict[str, str]:
    return {
        **os.environ,
        "CHESTXR_NO_PROGRESS": "1",
        "OMP_NUM_THREADS": "1",
        "CHESTXR_TEST_TAG": tag,
        "RAY_ADDRESS": "",
    }


def _kill_tagged(tag: str) -> None:
    """SIGKILL every process (the driver's local Ray: raylet, GCS, workers) started with CHESTXR_TEST_TAG=tag."""
    mark = f"CHESTXR_TEST_TAG={tag}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if mark in fh.read().split(b"\0"):
                        os.kill(int(entry), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue


def _predict(argv: list[str], tag: str, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [sys.executable, "-m", "chestxr", "predict", *argv],
            env=_local_ray_env(tag),
            capture_output=True,
            text=True,
            timeout=600,
            **kw,
        )
    finally:
        _kill_tagged(tag)  # nothing of a local Ray outlives the command


def test_engine_ray_needs_options_it_owns(tiny_run, folder, tmp_path, capsys):
    assert (
        main(["predict", "--checkpoint", str(tiny_run), str(folder), "--out", str(tmp_path / "o"), "--actors", "2"])
        == 2
    )
    assert "--engine ray" in capsys.readouterr().err
    code = main(
        [
            "predict",
            "--checkpoint",
            str(tiny_run),
            str(folder),
            "--out",
            str(tmp_path / "o"),
            "--engine",
            "ray",
            "--explain",
        ]
    )
    assert code == 2 and "--explain is not available with --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_same_outputs_as_plain_predict_and_resume_after_sigkill(tiny_run, folder, tmp_path):
    pytest.importorskip("ray")
    plain, ray_out = tmp_path / "plain", tmp_path / "ray"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(tiny_run),
                str(folder),
                "--out",
                str(plain),
                "--on-bad-image",
                "skip",
                "--workers",
                "0",
            ]
        )
        == 0
    )

    # a job killed (SIGKILL, driver and its local Ray) after its first stored part ...
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chestxr",
            "predict",
            "--checkpoint",
            str(tiny_run),
            str(folder),
            "--out",
            str(ray_out),
            *RAY_ARGS,
        ],
        env={**_local_ray_env(tag), "CHESTXR_RAY_PART_ROWS": "4"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not list((ray_out / "store").rglob("part-*.parquet")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no result part after 300 s"
            time.sleep(0.01)
        proc.kill()
        proc.communicate()
    finally:
        _kill_tagged(tag)
        if proc.poll() is None:
            proc.kill()
    stored_before = sum(len(pd.read_parquet(p)) for p in (ray_out / "store").rglob("part-*.parquet"))
    job = json.loads((ray_out / "job.json").read_text())
    assert job["status"] == "running"  # it never finished
    n_distinct = len(pd.read_csv(plain / "predictions.csv"))  # every image is distinct here, plus 1 garbage
    n_scored_or_bad = n_distinct + 1

    # ... is resumed by the same command: only what is missing is scored, nothing is written twice
    out = _predict(["--checkpoint", str(tiny_run), str(folder), "--out", str(ray_out), *RAY_ARGS], uuid.uuid4().hex)
    assert out.returncode == 0, out.stderr[-3000:]
    job = json.loads((ray_out / "job.json").read_text())
    assert job["status"] == "complete" and job["resumed_from"] == "running"
    assert job["reused"] == stored_before and job["computed"] == n_scored_or_bad - stored_before
    rows = pd.concat([pd.read_parquet(p) for p in (ray_out / "store").rglob("part-*.parquet")])
    assert len(rows) == n_scored_or_bad and rows["key"].is_unique

    # the files plain predict writes: same rows, probabilities within 1e-6, the same calls and skips
    for name in ("predictions.csv", "study_predictions.csv"):
        a = pd.read_csv(plain / name, keep_default_na=False)
        b = pd.read_csv(ray_out / name, keep_default_na=False)
        assert list(a.columns) == list(b.columns), name
        if name == "predictions.csv":
            a, b = a.sort_values("image_id").reset_index(drop=True), b.sort_values("image_id").reset_index(drop=True)
        else:  # per-file study keys are keyed hashes with a fresh key per call: compare by the images
            a, b = a.sort_values("image_ids").reset_index(drop=True), b.sort_values("image_ids").reset_index(drop=True)
            a, b = a.drop(columns=["study_id", "patient_id"]), b.drop(columns=["study_id", "patient_id"])
        probs = [c for c in a.columns if c.startswith(("prob_", "margin_", "logit_margin_"))]
        assert np.nanmax(np.abs(a[probs].to_numpy(float) - b[probs].to_numpy(float))) < 1e-6, name
        calls = [c for c in a.columns if c.startswith("call_")]
        assert (a[calls] == b[calls]).all().all(), name
        if name == "predictions.csv":
            assert a["image_id"].tolist() == b["image_id"].tolist()
    pd.testing.assert_frame_equal(pd.read_csv(plain / "skipped.csv"), pd.read_csv(ray_out / "skipped.csv"))
    assert len(pd.read_csv(ray_out / "skipped.csv")) == 2  # garbage.png (unreadable), README.txt (not an image)
    parquet = pd.read_parquet(ray_out / "predictions")
    csv = pd.read_csv(ray_out / "predictions.csv", keep_default_na=False)
    assert len(parquet) == len(csv) and parquet["prob_Opacity"].dtype == np.float64
    assert np.allclose(parquet["prob_Opacity"], csv["prob_Opacity"], rtol=0, atol=1e-12)
    assert (ray_out / "review.html").exists()

    # a rerun of a complete job scores nothing and writes the same files
    again = _predict(["--checkpoint", str(tiny_run), str(folder), "--out", str(ray_out), *RAY_ARGS], uuid.uuid4().hex)
    assert again.returncode == 0, again.stderr[-3000:]
    job = json.loads((ray_out / "job.json").read_text())
    assert (job["computed"], job["reused"]) == (0, n_scored_or_bad)
    assert len(pd.concat([pd.read_parquet(p) for p in (ray_out / "store").rglob("part-*.parquet")])) == n_scored_or_bad

    # --on-bad-image error: exit 2 naming the file; the job folder keeps its store, no new final files
    err = _predict(
        ["--checkpoint", str(tiny_run), str(folder), "--out", str(ray_out), "--engine", "ray"], uuid.uuid4().hex
    )
    assert err.returncode == 2 and "garbage.png" in err.stderr and "Traceback" not in err.stderr
    assert json.loads((ray_out / "job.json").read_text())["status"] == "stopped: images not readable"


def test_job_folder_refusals(tiny_run, folder, tmp_path, capsys):
    from chestxr.runs._ray_job import JobFolder

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("keep\n")
    with pytest.raises(Exception, match="not a `predict --engine ray` job; pass --overwrite"):
        with JobFolder.open(occupied, overwrite=False):
            pass
    assert (occupied / "mine.txt").exists()
    with pytest.raises(Exception, match="run folder"):
        with JobFolder.open(tiny_run, overwrite=True):
            pass
    job = tmp_path / "job"
    with JobFolder.open(job, overwrite=False):
        with pytest.raises(Exception, match="another `chestxr predict --engine ray` is writing"):
            with JobFolder.open(job, overwrite=False):
                pass


def test_review_page_of_a_large_job_is_capped_but_the_csvs_are_whole(tiny_run, folder, tmp_path):
    from chestxr.runs import Run
    from chestxr.runs._predict import prediction_inputs, write_prediction_outputs

    run = Run.load(tiny_run, device="cpu")
    source = prediction_inputs(None, [str(folder)])
    n = len(source.frame)
    scores = np.random.default_rng(0).random((n, len(run.findings)))
    written = write_prediction_outputs(
        tmp_path, run, source, kept=np.arange(n), scores=scores, unreadable=[], thumbnails=False, max_cards=5
    )
    html = written["html"].read_text()
    studies = len(pd.read_csv(written["study_predictions_csv"]))
    assert studies > 5 and len(pd.read_csv(written["predictions_csv"])) == n
    assert f"Showing the first 5 of {studies} studies" in html and html.count('class="card') <= 5 + 1


@pytest.mark.slow
def test_manifest_input_from_python(tiny_run, synth_manifest, tmp_path):
    """predict_run(engine="ray") on a manifest (the Python API; a local Ray started and stopped by the call)."""
    pytest.importorskip("ray")
    from chestxr.imaging import LoaderOptions
    from chestxr.runs import RayOptions, predict_run

    frame = pd.read_csv(synth_manifest).head(12)
    manifest = synth_manifest.parent / "first12.csv"
    frame.to_csv(manifest, index=False)
    plain = predict_run(tiny_run, tmp_path / "plain", manifest=manifest, loading=LoaderOptions(num_workers=0))
    ray_out = predict_run(
        tiny_run, tmp_path / "ray", manifest=manifest, engine="ray", ray=RayOptions(batch_size=4, num_cpus=2)
    )
    a = pd.read_csv(plain.predictions_csv, keep_default_na=False)
    b = pd.read_csv(ray_out.predictions_csv, keep_default_na=False)
    assert a.drop(columns=[c for c in a.columns if c.startswith(("prob_", "margin_", "logit_margin_"))]).equals(
        b.drop(columns=[c for c in b.columns if c.startswith(("prob_", "margin_", "logit_margin_"))])
    )  # ids, paths, patients, studies, metadata and calls: identical
    probs = [c for c in a.columns if c.startswith("prob_")]
    assert np.abs(a[probs].to_numpy(float) - b[probs].to_numpy(float)).max() < 1e-6
    assert ray_out.job is not None and json.loads(ray_out.job.read_text())["computed"] == 12
