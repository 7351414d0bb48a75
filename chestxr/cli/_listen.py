"""``chestxr listen``: a DICOM C-STORE listener that predicts each received study."""

from __future__ import annotations

import argparse

from chestxr.cli._options import AE_TITLE, COUNT, PORT, TIMEOUT, add_pacs_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "listen",
        help="receive studies by DICOM C-STORE and predict each when it is complete",
        description="A C-STORE SCP for CR/DX images (instances of other storage SOP classes are acknowledged, "
        "listed and not kept). Every received image is journaled to disk before it is acknowledged; a study is "
        "predicted once into OUT/studies/<study key>/ (the same files as `chestxr predict FOLDER`) when it is "
        "complete: nothing of it being received, no association that sent it still open, quiet for "
        "--study-timeout seconds. Optionally its DICOM SR (and Grad-CAM Secondary Captures) are C-STOREd to "
        "--store-to. SIGTERM/SIGINT stop it cleanly; a restart resumes what was received but not processed. "
        "The guarantees are in the README (Connect to a PACS: the listener's SPEC).",
    )
    p.add_argument("--checkpoint", required=True, help="run folder")
    p.add_argument("--out", required=True, help="output folder (journal, studies/, listen.log)")
    p.add_argument(
        "--ae-title", type=AE_TITLE, default="CHESTXR", help="this listener's AE title, 1-16 ASCII (default CHESTXR)"
    )
    p.add_argument("--port", type=PORT, default=11112, help="DICOM port to listen on, 1-65535 (default 11112)")
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default all; 127.0.0.1 for local only)")
    p.add_argument(
        "--study-timeout",
        type=TIMEOUT,
        default=30.0,
        help="seconds of quiet after which a study is complete (> 0, at most 86400; default 30)",
    )
    p.add_argument(
        "--aborted-timeout",
        type=float,
        default=600.0,
        help="seconds a study whose transfer was aborted (or cut by a stop) waits for its sender to resend "
        "before what arrived is processed (default 600)",
    )
    p.add_argument(
        "--reserve-mb",
        type=float,
        default=512.0,
        help="free space (MiB) kept for results: an instance that would eat into it is refused with 0xA700 "
        "until space returns (default 512)",
    )
    p.add_argument("--study-reduce", choices=["max", "mean"], default="max")
    p.add_argument("--batch-size", type=COUNT, default=32, help="images per forward pass (>= 1)")
    p.add_argument(
        "--require-approval",
        action="store_true",
        help="refuse to start unless the run is approved as it stands (chestxr approve); a study is then "
        "predicted (and its SR filed) only while the approval holds, else it stays in the journal",
    )
    p.add_argument("--keep-received", action="store_true", help="keep processed instances in the journal")
    add_pacs_options(p, store_to=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math
    import signal
    from pathlib import Path

    from chestxr.core import PacsError
    from chestxr.pacs import Listener, parse_node, setup_logging

    if not (math.isfinite(args.aborted_timeout) and args.aborted_timeout >= 0):
        raise PacsError(f"--aborted-timeout {args.aborted_timeout}: must be a number of seconds >= 0")
    if not (math.isfinite(args.reserve_mb) and args.reserve_mb >= 0):
        raise PacsError(f"--reserve-mb {args.reserve_mb}: must be a number of MiB >= 0 (0 keeps no reserve)")
    store_to = parse_node(args.store_to) if args.store_to else None
    from chestxr.runs import guard_output, protected_inputs, require_approval

    guard_output(args.out, protected_inputs(run=args.checkpoint))  # not into a run folder, not around one
    if args.require_approval:  # before the port opens: a void approval never receives a study
        require_approval(args.checkpoint)
    out = Path(args.out)
    setup_logging(out)
    listener = Listener(
        args.checkpoint,
        out,
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        study_timeout=args.study_timeout,
        aborted_timeout=args.aborted_timeout,
        reserve_bytes=int(args.reserve_mb * 2**20),
        store_to=store_to,
        store_sr=args.store_sr,
        store_heatmaps=args.store_heatmaps,
        keep_received=args.keep_received,
        study_reduce=args.study_reduce,
        batch_size=args.batch_size,
        require_approval=args.require_approval,
    )

    def _stop(signum, _frame):  # noqa: ANN001
        listener.request_stop()

    # handlers first: a signal arriving as soon as the port accepts must stop cleanly, not kill
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        listener.start()
    except OSError as exc:
        raise PacsError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); choose another --port"
        ) from None
    listener.wait()
    listener.stop()
    return 0
