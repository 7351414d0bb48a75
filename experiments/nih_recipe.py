"""chestxr's NIH recipe (configs/nih14-fast.yaml) against a plain torchvision resnet18 loop.

    python experiments/nih_recipe.py --budget-min 25 --seeds 0 1 2        # the issue's setting
    python experiments/nih_recipe.py --budget-min 8 --seeds 0 1 2         # what fitted this session

Both recipes train from scratch (no pretrained weights) on the same images of ONE fixed
patient-level split of data_manifests/nih14_shared.csv (``split_manifest(val=0.15, test=0.25,
seed=0)``, the same for every seed and recipe; written to OUT/split.csv), each for a wall budget of
``--budget-min`` minutes, and are scored on the same unseen test patients (mean AUROC over the 14
findings, and per finding). Test patients are never used for training or for choosing epochs.

* baseline: the plain loop a user would write. torchvision ``resnet18(weights=None)`` with
  ``fc = Linear(512, 14)``, 224 px, AdamW (lr 1e-3, wd 1e-4), BCEWithLogitsLoss, batch 16, the SAME
  augmentation as chestxr (``build_transform(PreprocessConfig(size=224), AugmentConfig(),
  train=True)``). To keep the loop simple it decodes every training image ONCE into memory
  (chestxr's ``read_image``, short side stored at 256 px, as chestxr's default cache) and
  augments in the main process. It stops after the epoch in which the budget is used (the rule
  chestxr's ``train.max_minutes`` follows) and its FINAL weights are evaluated.
* chestxr: ``chestxr.runs.train(load_config(CONFIG, ["train.max_minutes=B", "seed=S",
  "data.manifest=OUT/split.csv", "data.cache_dir=OUT/cache"]))``; the saved best model (by
  validation mean AUROC) is loaded with ``Run.load`` and scored with ``Run.logits``.

Per seed the two recipes alternate (seed 0: baseline first, seed 1: chestxr first, ...) so that
the load of a shared machine falls on both alike. Writes RESULTS/nih_recipe.csv (one row per run:
recipe, seed, budget, wall_s, epochs, val and test mean AUROC, per-finding test AUROC) and
RESULTS/nih_recipe.md (the same as tables, with mean +- std over seeds), and prints the summary.

``--val-only`` (tuning): train the chestxr recipe only, with extra ``--override``s, and report the
best VALIDATION mean AUROC; the test split is not scored. The real data is found through
``--shared`` (default: $CHESTXR_SHARED or ../shared beside the repository).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = REPO / "data_manifests" / "nih14_shared.csv"
DEFAULT_CONFIG = REPO / "configs" / "nih14-fast.yaml"
SPLIT = {"val": 0.15, "test": 0.25, "seed": 0}


def shared_root(arg: Optional[str]) -> Path:
    """The shared data folder: --shared, else $CHESTXR_SHARED, else ../shared beside the repository."""
    return Path(arg or os.environ.get("CHESTXR_SHARED") or REPO.parent / "shared").resolve()


def make_split(manifest_path: Path, *, shared: Path, out_dir: Path) -> Path:
    """Write OUT/split.csv: the fixed patient-level train/val/test split of ``manifest_path``.

    Image paths pointing into the default ../shared are re-rooted at ``shared``.
    """
    import pandas as pd

    from chestxr.data import read_manifest, split_manifest, write_manifest

    manifest = read_manifest(manifest_path, check_paths=False)
    default_root = str((REPO.parent / "shared").resolve())
    paths = manifest.frame["path"].astype(str)
    if str(shared) != default_root:
        paths = paths.str.replace(default_root, str(shared), regex=False)
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        sys.exit(f"{len(missing)} image(s) not found, e.g. {missing[0]}; pass --shared or set CHESTXR_SHARED")
    frame = manifest.frame.copy()
    frame["path"] = pd.Series(paths.tolist(), index=frame.index, dtype=str)
    manifest = split_manifest(
        type(manifest)(frame=frame, findings=manifest.findings, source=manifest.source),
        val=SPLIT["val"],
        test=SPLIT["test"],
        seed=SPLIT["seed"],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_manifest(manifest, out_dir / "split.csv")


def load_sets(split_csv: Path, config: Any) -> dict[str, Any]:
    """{"train", "val", "test"} LabeledSets of the split, labeled as ``config`` says."""
    from chestxr.data import load_labeled_set

    findings = list(config.data.findings)
    return {
        name: load_labeled_set(split_csv, findings=findings, policy=config.labels, split=name)
        for name in ("train", "val", "test")
    }


def score(labeled: Any, logits: Any) -> tuple[float, list[float]]:
    """(mean AUROC, per-finding AUROC list) of logits (n, f) against a LabeledSet's eval labels."""
    import numpy as np

    from chestxr.modeling import mean_auroc

    scores = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    return mean_auroc(labeled.eval_true, scores, labeled.eval_mask)


# --------------------------------------------------------------------------- the plain baseline
def run_baseline(
    sets: dict[str, Any],
    *,
    seed: int,
    budget_min: float,
    log: Callable[[str], None],
    size: int = 224,
    batch_size: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
) -> dict:
    """Train the plain torchvision resnet18 loop for ``budget_min`` minutes; score its final weights.

    Returns {"wall_s", "epochs", "val_logits" (n_val, f), "test_logits" (n_test, f)}.
    """
    import numpy as np
    import torch
    import torchvision

    from chestxr.core import AugmentConfig, PreprocessConfig
    from chestxr.imaging import build_transform, read_image, resize_to

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    started = time.perf_counter()
    pre = PreprocessConfig(size=size)
    train_tf = build_transform(pre, AugmentConfig(), train=True)
    eval_tf = build_transform(pre, None, train=False)
    train = sets["train"]
    images = [resize_to(read_image(p), 256) for p in train.paths]  # decode once, keep in memory
    targets = torch.as_tensor(train.targets)
    n_find = targets.shape[1]
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Linear(512, n_find)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    epochs = 0
    while True:
        model.train()
        order = torch.randperm(len(images))
        total = 0.0
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size].tolist()
            x = torch.stack([train_tf(images[i]) for i in idx])
            loss = loss_fn(model(x), targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        epochs += 1
        elapsed = time.perf_counter() - started
        log(f"baseline seed {seed} epoch {epochs}: loss {total / len(images):.4f}  {elapsed:.0f} s")
        if elapsed / 60 > budget_min:
            break
    wall = time.perf_counter() - started

    @torch.no_grad()
    def logits_of(paths: list[str]) -> np.ndarray:
        model.eval()
        out = []
        for lo in range(0, len(paths), 32):
            x = torch.stack([eval_tf(read_image(p)) for p in paths[lo : lo + 32]])
            out.append(model(x).numpy())
        return np.concatenate(out)

    return {
        "wall_s": wall,
        "epochs": epochs,
        "best_epoch": epochs,
        "val_logits": logits_of(sets["val"].paths),
        "test_logits": logits_of(sets["test"].paths),
    }


# --------------------------------------------------------------------------- the chestxr recipe
def run_chestxr(
    sets: dict[str, Any],
    *,
    config_path: Path,
    split_csv: Path,
    seed: int,
    budget_min: float,
    out_dir: Path,
    overrides: list[str],
    score_test: bool,
    log: Callable[[str], None],
) -> dict:
    """Train the chestxr recipe with ``chestxr.runs.train``; score its saved best model.

    Returns {"wall_s", "epochs", "best_epoch", "val_auroc" (best epoch's), "test_logits" or None}.
    """
    import json

    from chestxr.core import load_config
    from chestxr.imaging import IN_PROCESS
    from chestxr.runs import Run, train

    config = load_config(
        config_path,
        [
            f"train.max_minutes={budget_min}",
            f"seed={seed}",
            f"data.manifest={split_csv}",
            f"data.cache_dir={out_dir.parent / 'cache'}",
        ]
        + overrides,
    )
    started = time.perf_counter()
    shutil.rmtree(out_dir, ignore_errors=True)  # this script's own previous run: chestxr never replaces a run
    run_dir = train(config, out_dir=out_dir, log=log).run_dir
    wall = time.perf_counter() - started
    with open(run_dir / "metrics.csv", encoding="utf-8") as fh:
        history = list(csv.DictReader(fh))
    meta = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))
    key = next(k for k in history[0] if "auroc" in k.lower() and "val" in k.lower())
    best = max(float(r[key]) for r in history)
    result = {
        "wall_s": wall,
        "epochs": len(history),
        "best_epoch": meta.get("best_epoch"),
        "val_auroc": best,
        "test_logits": None,
    }
    if score_test:
        run = Run.load(run_dir, device="cpu")
        result["test_logits"] = run.logits(sets["test"].paths, loading=IN_PROCESS).logits
    return result


# --------------------------------------------------------------------------- results
def _fmt(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def summarize(rows: list[dict], findings: list[str]) -> str:
    """Markdown: per-run table, per-finding table, mean +- std per recipe."""
    out = [
        "| recipe | seed | budget (min) | wall (s) | epochs | best epoch | val mean AUROC | test mean AUROC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        out.append(
            f"| {r['recipe']} | {r['seed']} | {r['budget_min']:g} | {r['wall_s']:.0f} | {r['epochs']} | "
            f"{r['best_epoch']} | {_fmt(r['val_mean_auroc'])} | {_fmt(r['test_mean_auroc'])} |"
        )
    out += [
        "",
        "| recipe | n | test mean AUROC, mean +- std | min | max | val mean AUROC | wall (s) | epochs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        rs = [r for r in rows if r["recipe"] == recipe]
        t = [r["test_mean_auroc"] for r in rs if r["test_mean_auroc"] is not None]
        v = [r["val_mean_auroc"] for r in rs]
        sd = statistics.stdev(t) if len(t) > 1 else float("nan")
        out.append(
            f"| {recipe} | {len(rs)} | {statistics.mean(t):.3f} +- {sd:.3f} | {min(t):.3f} | {max(t):.3f} | "
            f"{statistics.mean(v):.3f} | {statistics.mean(r['wall_s'] for r in rs):.0f} | "
            f"{statistics.mean(r['epochs'] for r in rs):.1f} |"
            if t
            else f"| {recipe} | {len(rs)} | - | | | "
            f"{statistics.mean(v):.3f} | {statistics.mean(r['wall_s'] for r in rs):.0f} | |"
        )
    if any(r["test_mean_auroc"] is not None for r in rows):
        out += [
            "",
            "Per-finding test AUROC (recipe/seed):",
            "",
            "| finding | " + " | ".join(f"{r['recipe']}/{r['seed']}" for r in rows) + " |",
            "| --- |" + " --- |" * len(rows),
        ]
        for f in findings:
            out.append(f"| {f} | " + " | ".join(_fmt(r.get(f)) for r in rows) + " |")
    return "\n".join(out)


def write_results(rows: list[dict], findings: list[str], results_dir: Path, name: str) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    keys = (
        ["recipe", "seed", "budget_min", "wall_s", "epochs", "best_epoch", "val_mean_auroc", "test_mean_auroc"]
        + findings
        + ["overrides"]
    )
    with open(results_dir / f"{name}.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4f}" if isinstance(r.get(k), float) else r.get(k, "")) for k in keys})
    (results_dir / f"{name}.md").write_text(summarize(rows, findings) + "\n", encoding="utf-8")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget-min", type=float, default=25.0, help="wall budget per run, minutes")
    ap.add_argument("--recipes", nargs="+", choices=["baseline", "chestxr"], default=["baseline", "chestxr"])
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="chestxr recipe (YAML)")
    ap.add_argument("--override", action="append", default=[], help="extra chestxr override KEY=VALUE")
    ap.add_argument("--val-only", action="store_true", help="tuning: chestxr only, report validation AUROC")
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    ap.add_argument("--shared", default=None, help="shared data folder ($CHESTXR_SHARED or ../shared)")
    ap.add_argument("--out", default=str(REPO / "runs" / "nih_recipe"), help="run folders")
    ap.add_argument("--results", default=str(REPO / "experiments" / "results"))
    ap.add_argument("--name", default="nih_recipe", help="results file stem")
    args = ap.parse_args(argv)
    os.environ.setdefault("CHESTXR_NO_PROGRESS", "1")
    sys.path.insert(0, str(REPO))
    from chestxr.core import load_config

    out = Path(args.out)
    split_csv = make_split(Path(args.manifest), shared=shared_root(args.shared), out_dir=out)
    config = load_config(args.config, args.override)
    findings = list(config.data.findings)
    sets = load_sets(split_csv, config)
    print(
        f"split (patient-level, seed 0): train {len(sets['train'])}, val {len(sets['val'])}, "
        f"test {len(sets['test'])} images",
        flush=True,
    )
    recipes = ["chestxr"] if args.val_only else args.recipes
    rows: list[dict] = []

    def log(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    for i, seed in enumerate(args.seeds):
        for recipe in recipes if i % 2 == 0 else recipes[::-1]:
            log(f"--- {recipe} seed {seed}, budget {args.budget_min:g} min")
            if recipe == "baseline":
                res = run_baseline(sets, seed=seed, budget_min=args.budget_min, log=log)
                val_auc, _ = score(sets["val"], res["val_logits"])
            else:
                res = run_chestxr(
                    sets,
                    config_path=Path(args.config),
                    split_csv=split_csv,
                    seed=seed,
                    budget_min=args.budget_min,
                    out_dir=out / f"{args.name}-chestxr-s{seed}",
                    overrides=args.override,
                    score_test=not args.val_only,
                    log=log,
                )
                val_auc = res["val_auroc"]
            row = {
                "recipe": recipe,
                "seed": seed,
                "budget_min": args.budget_min,
                "wall_s": res["wall_s"],
                "epochs": res["epochs"],
                "best_epoch": res["best_epoch"],
                "val_mean_auroc": val_auc,
                "test_mean_auroc": None,
                "overrides": " ".join(args.override) if recipe == "chestxr" else "",
            }
            if res.get("test_logits") is not None:
                row["test_mean_auroc"], per = score(sets["test"], res["test_logits"])
                row.update(dict(zip(findings, per)))
            log(
                f"=== {recipe} seed {seed}: {res['epochs']} epochs, {res['wall_s']:.0f} s, "
                f"val {_fmt(val_auc)}, test {_fmt(row['test_mean_auroc'])}"
            )
            rows.append(row)
            write_results(rows, findings, Path(args.results), args.name)
    print(summarize(rows, findings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
