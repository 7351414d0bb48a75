"""``chestxr export --checkpoint RUN --format torchscript|onnx|monai-bundle --out PATH``: a deployable model
file, or a MONAI Bundle folder (chestxr.runs._bundle)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run's model to TorchScript, ONNX or a MONAI Bundle",
        description="Trace the run's best model at its preprocessing size and write it as TorchScript "
        "(torch.jit.load) or ONNX (dynamic batch axis; input 'image' (B, C, S, S), output 'logits' "
        "(B, n_findings)), plus FILE.json with the findings, preprocessing, thresholds and probability "
        "calibration. The exported outputs are checked against the eager model (|difference| <= 1e-4) "
        "before the file is written. --format monai-bundle writes a MONAI Bundle folder (configs/metadata.json, "
        "configs/inference.json, models/model.ts) for MONAI Label / Deploy; needs the 'monai' extra.",
    )
    p.add_argument("--checkpoint", required=True, help="run folder written by `chestxr train`")
    p.add_argument("--format", choices=["torchscript", "onnx", "monai-bundle"], default="torchscript")
    p.add_argument("--out", required=True, help="file to write (model.pt, model.onnx) or the bundle folder")
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

    from chestxr.runs import export_model, sidecar_path

    if args.format == "monai-bundle":
        from chestxr.runs import export_monai_bundle

        if args.example_size:
            print("warning: --example-size is ignored for a MONAI Bundle (it uses the checkpoint's size)")
        bundle = export_monai_bundle(args.checkpoint, args.out, overwrite=args.overwrite)
        check = json.loads((bundle / "configs" / "metadata.json").read_text())["chestxr"]["check"]
        print(f"monai-bundle: {bundle}")
        print(f"max |traced - eager| on a random batch: {check['max_abs_diff']:.2e}")
        return 0
    out = export_model(
        args.checkpoint, args.out, format=args.format, example_size=args.example_size, overwrite=args.overwrite
    )
    side = sidecar_path(out)
    check = json.loads(side.read_text())["check"]
    print(f"{args.format}: {out}")
    print(f"metadata: {side}")
    print(f"max |exported - eager| on a random batch: {check['max_abs_diff']:.2e}")
    return 0
