"""``chestxr demo``: the whole pipeline on a synthetic set the package makes itself.

generate 400 synthetic radiographs (PNG + DICOM, 4 findings) -> patient-level split -> train a tiny
CNN -> calibrate thresholds on val -> evaluate on test (report.html) -> predict the test DICOMs
(review.html). Minutes on 2 CPU cores; prints where the reports are.
"""

from __future__ import annotations

import argparse
from typing import Any

from chestxr.cli._options import COUNT, SEED

#: what the demo must reach on its test patients (tests/test_demo_quality.py checks seeds 0-2)
DEMO_BAR = {"macro": 0.93, "finding": 0.85}

# Kept equal to configs/demo.yaml by a test.
DEMO_CONFIG: dict[str, Any] = {
    "name": "demo",
    "seed": 0,
    "data": {"num_workers": 0},
    "labels": {"uncertain": "masked", "blank": "masked"},
    "preprocessing": {"size": 96, "cache_size": 128},
    "augmentation": {"rotate_deg": 3.0, "scale": [0.97, 1.03], "translate": 0.02},
    "model": {"backbone": "smallcnn"},
    "train": {"epochs": 20, "batch_size": 16, "lr": 0.002, "weight_decay": 0.0001, "scheduler": "onecycle"},
    "calibration": {"method": "youden"},
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate synthetic X-rays, train, calibrate, evaluate and write the reports",
        description="End-to-end demo on data the package generates: synthetic chest radiographs with "
        "4 findings, split by patient, a small CNN trained on the CPU, thresholds calibrated on the "
        "validation split, an evaluation report on the test split and a review worklist.",
    )
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument("--images", type=COUNT, default=400, help="number of synthetic images")
    p.add_argument("--epochs", type=COUNT, default=None, help="override the number of epochs")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--bootstrap", type=COUNT, default=1000, help="bootstrap resamples for intervals")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import copy
    import time

    from chestxr.core import config_from_dict, prepare_output_dir, say
    from chestxr.data import generate_synthetic_dataset, read_manifest, split_manifest, write_manifest
    from chestxr.imaging import IN_PROCESS
    from chestxr.runs import calibrate_run, evaluate_run, predict_run, train

    t0 = time.perf_counter()
    import shutil
    from pathlib import Path

    from chestxr.runs import DEMO_MARKER, guard_output

    previous = Path(args.out)
    # a previous demo (marked; or, made before the marker, its data/manifest_split.csv beside run/model.json):
    # its own run inside, nothing else
    made_by_demo = (previous / DEMO_MARKER).is_file() or (
        (previous / "data" / "manifest_split.csv").is_file() and (previous / "run" / "model.json").is_file()
    )
    if args.overwrite and made_by_demo:
        guard_output(previous, own_run=previous / "run")
        shutil.rmtree(previous)
    else:
        guard_output(previous)  # never over, into or around a run folder
    out = prepare_output_dir(args.out, overwrite=args.overwrite)
    (out / DEMO_MARKER).write_text("made by `chestxr demo`; `chestxr demo --out THIS --overwrite` replaces it\n")
    say(f"[1/5] generating {args.images} synthetic chest X-rays in {out / 'data'}")
    manifest_path = generate_synthetic_dataset(out / "data", n_images=args.images, seed=args.seed)
    manifest = split_manifest(read_manifest(manifest_path), val=0.15, test=0.25, seed=args.seed)
    split_path = out / "data" / "manifest_split.csv"
    write_manifest(manifest, split_path)
    counts = manifest.frame["split"].value_counts().to_dict()
    say(f"      split by patient: {counts}")

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["seed"] = args.seed
    cfg["data"]["manifest"] = str(split_path)
    if args.epochs:
        cfg["train"]["epochs"] = args.epochs
    config = config_from_dict(cfg)
    run_dir = out / "run"
    say(f"[2/5] training {config.model.backbone} for {config.train.epochs} epochs -> {run_dir}")
    run = train(config, out_dir=run_dir, overwrite=True)

    say(f"[3/5] calibrating thresholds on the validation split ({config.calibration.method}, the run's config)")
    cal = calibrate_run(run, split_path, split="val", n_boot=args.bootstrap, loading=IN_PROCESS)
    for r in cal.thresholds:
        say(f"      {r.finding:<14} threshold {r.threshold:.3f}  sens {r.sensitivity:.3f}  spec {r.specificity:.3f}")

    say("[4/5] evaluating on the test split")  # `run` holds the thresholds just calibrated
    written = evaluate_run(
        run, split_path, out / "report", split="test", n_boot=args.bootstrap, overwrite=True, loading=IN_PROCESS
    )
    metrics = written.metrics
    per = {f: float(v.get("auroc", float("nan"))) for f, v in metrics.get("findings", {}).items()}
    macro = float(metrics.get("macro", {}).get("auroc", float("nan")))
    say("      test AUROC " + "  ".join(f"{f} {a:.3f}" for f, a in per.items()))
    say(f"      test macro AUROC {macro:.3f}")
    worst = min(per, key=lambda f: per[f]) if per else None
    if worst is not None and not (macro >= DEMO_BAR["macro"] and per[worst] >= DEMO_BAR["finding"]):
        print(
            f"warning: the demo's bar (macro AUROC >= {DEMO_BAR['macro']}, every finding >= {DEMO_BAR['finding']}) "
            f"is not met: macro {macro:.3f}, {worst} {per[worst]:.3f}"
        )

    say("[5/5] predicting the test studies into a review worklist")
    test_rows = manifest.frame[manifest.frame["split"] == "test"]
    test_manifest = out / "data" / "test_only.csv"
    from dataclasses import replace

    write_manifest(replace(manifest, frame=test_rows.reset_index(drop=True)), test_manifest)
    review = predict_run(run, out / "review", manifest=test_manifest, overwrite=True, loading=IN_PROCESS)

    print(f"\ndone in {time.perf_counter() - t0:.0f} s")
    print(f"evaluation report: {written.html}")
    print(f"review worklist:   {review.html}")
    print(f"run folder:        {run_dir}")
    return 0
