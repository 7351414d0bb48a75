"""``chestxr predict --dicomweb``: search, retrieve, predict as on a folder, optionally store SRs back.

Order, so that a failure leaves nothing half-written: check the options (URL, --study UIDs, --since,
--modality, --timeout) and --out, load the run, search (QIDO-RS), retrieve every instance (WADO-RS) into a
hidden staging folder next to --out, predict there with the folder workflow, build the SRs / heat maps, store
them (STOW-RS); the output folder is built under a temporary name (:func:`chestxr.core.staged_output_dir`) and
swapped in only when all of that is done. Any error leaves --out as it was. The staging copy (which holds the
patients' files) is always deleted. Storing is idempotent: the SR and heat-map UIDs are derived from the study,
its images and the model, so a re-run does not file duplicates.

A study whose retrieval fails on its own (HTTP 404 for it, a malformed or empty answer) follows
``loading.on_bad_image``: "skip" leaves it out and lists it in skipped.csv (its keyed name, "not retrieved:
why"); "error" stops with one line naming it by that keyed name, nothing written.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from chestxr.core import PacsError, escape_frame, staged_output_dir, write_text_atomic
from chestxr.imaging import LoaderOptions
from chestxr.pacs._credentials import Credentials
from chestxr.pacs._extras import require
from chestxr.pacs._process import STAGED
from chestxr.pacs._staging import Keyer
from chestxr.runs import guard_run_output, load_run, refuse_run_folder
from chestxr.runs import require_approval as ensure_approved


def predict_dicomweb(
    run_dir: str | Path,
    url: str,
    out_dir: str | Path,
    *,
    credentials: Optional[Credentials] = None,
    studies: Sequence[str] = (),
    since: Optional[str] = None,
    modalities: Sequence[str] = (),
    store_sr: bool = False,
    store_heatmaps: bool = False,
    timeout: float = 30.0,
    study_reduce: str = "max",
    explain: bool = False,
    overwrite: bool = False,
    loading: LoaderOptions = STAGED,
    keyer: Optional[Keyer] = None,
    require_approval: bool = False,
) -> dict[str, Path]:
    """Predict the studies a DICOMweb server holds (filters: ``studies`` UIDs, ``since`` YYYY-MM-DD,
    ``modalities``) into ``out_dir``; returns the written files (plus "stored": stored.csv).

    require_approval: refuse (ApprovalError) a run that is not approved as it stands, before any traffic and again
    before storing (so a void approval never files an SR).
    keyer: names the staged studies/instances (default: a fresh random key, so image_ids reveal nothing);
    predictions.csv's image_id is ``<study key>/<instance key>.dcm`` and stored.csv's ``study`` the key."""
    import pandas as pd

    from chestxr.pacs._dicomweb import DicomWeb, check_uid
    from chestxr.pacs._process import predict_staging

    out = Path(out_dir)
    studies = [check_uid(u) for u in studies]
    server = DicomWeb(url, credentials, timeout=timeout)  # checks the URL and the timeout; no traffic yet
    guard_run_output(out, run_dir)  # --out RUN --overwrite would delete the run folder
    with staged_output_dir(out, overwrite=overwrite, refuse=refuse_run_folder) as result:
        if store_sr or store_heatmaps:
            require("highdicom")  # fail before any network traffic when the extra is missing
        run = load_run(run_dir)
        if require_approval:
            ensure_approved(run, run.metadata)
        uids = server.search_studies(studies=studies, since=since, modalities=modalities)
        if not uids:
            raise PacsError(f"DICOMweb server {server.url}: no study matches the filters (--study/--since/--modality)")
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))  # 0700: patients' files
        try:
            staging = work / "instances"
            staging.mkdir()
            retrieved = server.retrieve_studies(
                uids, staging, keyer, on_error="skip" if loading.on_bad_image == "skip" else "raise"
            )
            written, results = predict_staging(
                run,
                staging,
                result,
                study_reduce=study_reduce,
                explain=explain,
                overwrite=True,
                loading=loading,
                make_sr=store_sr,
                make_heatmaps=store_heatmaps,
                skipped_studies=retrieved.failed,
            )
            if require_approval and any(res.datasets for res in results):
                ensure_approved(run, run.metadata)  # still approved now that the SRs are built (no recalibration since)
            rows = []
            for res in results:
                n_sr = sum(1 for d in res.datasets if d.Modality == "SR")
                if res.datasets:
                    server.store(res.datasets)
                rows.append(
                    {
                        "study": res.key,
                        "n_images": res.n_images,
                        "n_skipped": res.n_skipped,
                        "sr_stored": n_sr,
                        "heatmaps_stored": len(res.datasets) - n_sr,
                    }
                )
            write_text_atomic(result / "stored.csv", escape_frame(pd.DataFrame(rows)).to_csv(index=False))
        finally:
            shutil.rmtree(work, ignore_errors=True)  # the patients' files never outlive the call
    if not any(r.n_images for r in results):
        raise PacsError(
            f"none of the {len(uids)} matching studies has an image the run accepts (CR/DX passing "
            f"its header checks); nothing was predicted, the reasons are in {out / 'skipped.csv'}"
        )
    return {name: out / Path(path).name for name, path in {**written, "stored": result / "stored.csv"}.items()}
