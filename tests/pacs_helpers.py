"""Helpers for the PACS tests: a tiny run with stored thresholds, synthetic studies, an SR reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pydicom

FINDINGS = ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]
GUARANTEE = {
    "method": "clopper-pearson",
    "metric": "sensitivity",
    "target": 0.8,
    "level": 0.95,
    "status": "guaranteed",
    "lower_bound": 0.8123,
    "n_pos": 60,
    "n_needed": 29,
}


def make_run(run_dir: Path, *, approval: Optional[dict] = None, guarantee: bool = True) -> Path:
    """A tiny random-weight run (64 px, CR/DX PA/AP only) with calibrated thresholds in model.json; one
    finding has a guarantee record, the others none; ``approval`` goes into model.json as is."""
    import torch

    from chestxr.core import Config, config_to_dict
    from chestxr.modeling import build_model
    from chestxr.runs import save_model, update_metadata

    torch.manual_seed(0)
    model = build_model("tiny", len(FINDINGS)).eval()
    pre = config_to_dict(Config())["preprocessing"]
    pre.update(size=64, cache_size=64, modalities=["CR", "DX"], view_positions=["PA", "AP"])
    save_model(
        run_dir,
        model,
        {
            "findings": FINDINGS,
            "mode": "multilabel",
            "preprocessing": pre,
            "label_policy": config_to_dict(Config())["labels"],
        },
    )
    records = [{"finding": f, "method": "youden", "threshold": t} for f, t in zip(FINDINGS, (0.3, 0.5, 0.55, 0.7))]
    if guarantee:
        records[0].update(
            status="guaranteed",
            guaranteed=True,
            target=0.8,
            confidence=0.95,
            lower_bound=0.8123,
            guarantee=dict(GUARANTEE),
        )
    changes: dict[str, Any] = {"thresholds": records}
    if approval is not None:
        changes["approval"] = approval
    update_metadata(run_dir, changes, reason="test thresholds")
    return run_dir


def synthetic_studies(folder: Path, *, n_images: int = 8, seed: int = 5) -> dict[str, list[Path]]:
    """Synthetic DICOM chest films (fake identifiers SYNTH^n) grouped by StudyInstanceUID."""
    from chestxr.data import generate_synthetic_dataset

    manifest = generate_synthetic_dataset(
        folder, n_images=n_images, seed=seed, size=64, dicom_fraction=1.0, images_per_patient=(1, 2)
    )
    studies: dict[str, list[Path]] = {}
    for p in sorted((manifest.parent / "images").glob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        studies.setdefault(str(ds.StudyInstanceUID), []).append(p)
    return studies


def lateral_copy(source: Path, dest: Path) -> Path:
    """A copy of ``source`` in the same study with ViewPosition LL and a new SOP Instance UID."""
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(source)
    ds.ViewPosition = "LL"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(dest, enforce_file_format=True)
    return dest


def content_items(ds: Any) -> list[Any]:
    """Every content item of an SR, depth first."""
    out = []
    for item in getattr(ds, "ContentSequence", []):
        out.append(item)
        out.extend(content_items(item))
    return out


def _name(item: Any) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning) if "ConceptNameCodeSequence" in item else ""


def read_sr(ds: Any) -> dict[str, dict[str, Any]]:
    """Per finding (by tracking identifier): study probability, per-image probabilities {SOP UID: p},
    threshold, call, guarantee text, lower bound, approval text, algorithm parameters."""
    imaging = [i for i in content_items(ds) if _name(i) == "Imaging Measurements"][0]
    out: dict[str, dict[str, Any]] = {}
    for group in imaging.ContentSequence:
        rec: dict[str, Any] = {"images": {}, "params": [], "sources": set()}
        for item in group.ContentSequence:
            name = _name(item)
            if name == "Tracking Identifier":
                finding = str(item.TextValue)
            elif item.ValueType == "NUM":
                value = float(item.MeasuredValueSequence[0].NumericValue)
                refs = [c for c in getattr(item, "ContentSequence", []) if c.ValueType == "IMAGE"]
                if name == "Probability of finding" and refs:
                    rec["images"][str(refs[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)] = value
                else:
                    rec[name] = value
                rec["params"] += [str(c.TextValue) for c in content_items(item) if _name(c) == "Algorithm Parameters"]
            elif item.ValueType == "CODE":
                rec[name] = str(item.ConceptCodeSequence[0].CodeMeaning)
            elif item.ValueType == "IMAGE":
                rec["sources"].add(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        out[finding] = rec
    return out


def probs_close(a: float, b: float) -> bool:
    return bool(np.isclose(a, b, rtol=0, atol=1e-12))
