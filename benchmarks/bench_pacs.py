"""Studies per minute through the PACS paths vs the same images read from a folder, in one run.

    python benchmarks/bench_pacs.py [--smoke | --quick | --full] [--threads 2] [--json FILE]

Setting: synthetic DICOM studies (chestxr/data/_synthetic.py, 1-2 images per study, ``--size`` px, 16-bit),
a random-weight run (``tiny`` backbone, 4 findings, ``--input`` px model input), a real Orthanc with the
DICOMweb plugin on free localhost ports (tests/orthanc.py; storage in a temp folder). Rows, each timed
from the first byte sent / first request to the last study's outputs written:

* folder: ``predict_run`` on a folder holding the same files (the baseline; after an untimed warm-up run
  over the same folder, so no row pays for imports or a cold page cache);
* DICOMweb pull: ``predict_dicomweb`` (QIDO-RS search, WADO-RS retrieval into staging, the same predict);
  again with ``--store-sr`` (SR built and stored by STOW-RS per study);
* listen: a :class:`~chestxr.pacs.Listener` receiving every study by C-STORE from a pynetdicom
  sender in one association (the ``--study-timeout`` quiet period of each study included: it is the
  time the listener waits before a study counts as complete); again pushing each SR to Orthanc.

studies/min = n_studies / seconds * 60. Orthanc is skipped (with a note) when not installed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

sys.path.insert(0, str(C.REPO / "tests"))
SETTINGS = {  # n_images, image size, model input, study timeout
    "smoke": (6, 64, 64, 0.2),
    "quick": (60, 256, 128, 0.5),
    "full": (300, 512, 224, 1.0),
}


def make_run(run_dir: Path, size: int) -> Path:
    import torch

    from chestxr.core import Config, config_to_dict
    from chestxr.data import FINDINGS
    from chestxr.modeling import build_model
    from chestxr.runs import save_model

    torch.manual_seed(0)
    cfg = config_to_dict(Config())
    pre = {**cfg["preprocessing"], "size": size, "cache_size": size}
    save_model(
        run_dir,
        build_model("tiny", len(FINDINGS)).eval(),
        {"findings": list(FINDINGS), "mode": "multilabel", "preprocessing": pre, "label_policy": cfg["labels"]},
    )
    return run_dir


def send_all(port: int, files: list[Path]) -> None:
    import pydicom
    from pynetdicom import AE, StoragePresentationContexts

    ae = AE(ae_title="BENCH")
    ae.requested_contexts = StoragePresentationContexts
    assoc = ae.associate("127.0.0.1", port, ae_title="CHESTXR")
    assert assoc.is_established, "listener refused the association"
    for f in files:
        status = assoc.send_c_store(pydicom.dcmread(f))
        assert status and int(status.Status) == 0, f"C-STORE failed for {f.name}"
    assoc.release()


def time_listen(run: Path, files: list[Path], n_studies: int, work: Path, timeout_s: float, store_to=None) -> float:
    from orthanc import free_port

    from chestxr.pacs import Listener

    port = free_port()
    lst = Listener(
        run,
        work,
        host="127.0.0.1",
        port=port,
        study_timeout=timeout_s,
        store_to=store_to,
        store_sr=store_to is not None,
    ).start()
    try:
        t0 = time.perf_counter()
        send_all(port, files)
        deadline = time.monotonic() + 600
        while len(lst.processed) < n_studies:
            assert time.monotonic() < deadline, "listener did not finish"
            time.sleep(0.02)
        if store_to is not None:
            while any(lst.journal.open_rounds(k) for k in lst.journal.studies()):
                time.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        lst.stop()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="seconds: 6 tiny images (what the test suite runs)")
    mode.add_argument("--quick", action="store_true", help="60 images, 256 px, 128 px model input")
    mode.add_argument("--full", action="store_true", help="300 images, 512 px, 224 px model input (default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    setting = "smoke" if args.smoke else "quick" if args.quick else "full"
    n_images, size, model_size, timeout_s = SETTINGS[setting]
    C.setup_torch(args.threads)
    import logging

    import pydicom
    from orthanc import orthanc_missing, start_orthanc

    from chestxr.imaging import IN_PROCESS
    from chestxr.pacs import Credentials, Node, predict_dicomweb
    from chestxr.runs import predict_run

    logging.getLogger("chestxr.listen").setLevel(logging.WARNING)
    why = orthanc_missing()
    root = Path(tempfile.mkdtemp(prefix="bench_pacs_"))
    rows, result = [], {"setting": setting, "loadavg": open("/proc/loadavg").read().split()[:3]}
    server = None
    try:
        from chestxr.data import generate_synthetic_dataset

        manifest = generate_synthetic_dataset(
            root / "data", n_images=n_images, seed=1, size=size, dicom_fraction=1.0, images_per_patient=(1, 2)
        )
        files = sorted((manifest.parent / "images").glob("*.dcm"))
        n_studies = len({str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files})
        run = make_run(root / "run", model_size)
        # warm-up, untimed: imports, first forwards, the files in the page cache (every row then starts warm)
        predict_run(run, root / "warm", inputs=[str(manifest.parent / "images")], loading=IN_PROCESS)

        def row(name: str, secs: float) -> None:
            rows.append([name, n_studies, len(files), secs, n_studies / secs * 60])

        t0 = time.perf_counter()
        predict_run(run, root / "folder", inputs=[str(manifest.parent / "images")], loading=IN_PROCESS)
        row("folder (baseline)", time.perf_counter() - t0)
        if why:
            print(f"note: {why}; DICOMweb and listen rows skipped")
        else:
            server = start_orthanc(root / "orthanc")
            for f in files:
                server.upload(f)
            creds = Credentials("basic", server.user, server.password, "bench")
            t0 = time.perf_counter()
            predict_dicomweb(run, server.dicomweb, root / "pull", credentials=creds)
            row("DICOMweb pull", time.perf_counter() - t0)
            t0 = time.perf_counter()
            predict_dicomweb(run, server.dicomweb, root / "pull_sr", credentials=creds, store_sr=True)
            row("DICOMweb pull + STOW SR", time.perf_counter() - t0)
            row(
                f"listen (C-STORE, {timeout_s:g} s quiet)",
                time_listen(run, files, n_studies, root / "listen", timeout_s),
            )
            node = Node(server.aet, "127.0.0.1", server.dicom_port)
            row(
                f"listen + C-STORE SR ({timeout_s:g} s quiet)",
                time_listen(run, files, n_studies, root / "listen_sr", timeout_s, store_to=node),
            )
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    table = C.print_table(
        f"PACS throughput ({setting}: {n_images} images, {size} px, model input {model_size} px)",
        ["path", "studies", "images", "seconds", "studies/min"],
        rows,
    )
    print(f"loadavg at start: {' '.join(result['loadavg'])}")
    result.update(rows=rows, table=table)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
