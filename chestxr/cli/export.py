"""``chestxr export --checkpoint RUN --format torchscript|onnx --out FILE``: a deployable model file."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run's model to TorchScript or ONNX",
        description="Trace the run's best model at its preprocessing size and write it as TorchScript "
        "(torch.jit.load) or ONNX (dynamic batch axis; input 'image' (B, C, S, S), output 'logits' "
        "(B, n_findings)), plus FILE.json with the findings, preprocessing, thresholds and probability "
        "calibration. The exported outputs are checked against the eager model (|difference| <= 1e-4) "
        "before the file is written.",
    )
    p.add_argument("--checkpoint", required=True, help="run folder written by `chestxr train`")
    p.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    p.add_argument("--out", required=True, help="file to write, e.g. model.pt or model.onnx")
    p.add_argument(
        "--example-size",
        type=int,
        default=None,
        help="input side to trace at (default: the checkpoint's preprocessing.size)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from chestxr.runs.export import export_model, sidecar_path

    out = export_model(
        args.checkpoint, args.out, format=args.format, example_size=args.example_size, overwrite=args.overwrite
    )
    side = sidecar_path(out)
    check = json.loads(side.read_text())["check"]
    print(f"{args.format}: {out}")
    print(f"metadata: {side}")
    print(f"max |exported - eager| on a random batch: {check['max_abs_diff']:.2e}")
    return 0
