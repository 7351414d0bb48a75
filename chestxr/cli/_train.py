"""``chestxr train``: train a model from a config preset/YAML and a manifest into a run folder."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (writes a run folder)",
        description="Train a multi-label (or one-vs-rest / binary) classifier. The run folder gets "
        "config.yaml, model.safetensors + model.json (best epoch), last/ (for --resume), metrics.csv. "
        "Runs under `torchrun --nproc_per_node N chestxr train ...` with DDP.",
    )
    p.add_argument("--config", "-c", default=None, help="preset name (configs/NAME.yaml) or a YAML file")
    p.add_argument("--manifest", "-m", default=None, help="training manifest CSV (sets data.manifest)")
    p.add_argument("--out", "-o", default=None, help="run folder (default runs/<name>)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 --set model.backbone=resnet18",
    )
    p.add_argument("--weights", default=None, help="backbone weights: torchvision enum name or a local file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from chestxr.core import load_config
    from chestxr.runs import train

    overrides = list(args.overrides)
    if args.manifest:
        overrides.append(f"data.manifest={args.manifest}")
    if args.weights:
        overrides.append(f"model.weights={args.weights}")
    config = load_config(args.config, overrides)
    if args.resume and args.out and (Path(args.out) / "config.yaml").exists() and args.config is None:
        config = load_config(Path(args.out) / "config.yaml", overrides)
    out = args.out or str(Path("runs") / config.name)
    run = train(config, out_dir=out, resume=args.resume, overwrite=args.overwrite)
    print(f"run folder: {run.run_dir}")
    return 0
