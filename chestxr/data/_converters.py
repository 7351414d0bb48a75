"""Converters from published label tables to chestxr manifests (vectorized: 112k NIH rows in ~1 s).

Each returns a DataFrame in manifest layout: ``path`` (image_root joined with the table's image
name, '/' separated, relative unless image_root is absolute), ``patient_id``, ``study_id``,
``view``, ``sex`` (F/M/""), ``age`` (float, NaN unknown), then canonical finding columns as
float64 (1, 0, -1 uncertain, NaN blank). Write it with ``chestxr.data.write_manifest``.

- NIH ChestX-ray14 ``Data_Entry_2017*.csv``: every finding in "Finding Labels" (split on '|')
  is 1, the others 0 (NIH has no uncertain or blank labels); "No Finding" is its own column.
  patient_id = 8-digit zero-padded "Patient ID"; study_id = patient_id + "_" + 3-digit
  "Follow-up #" (= the image name's stem). Default image_root "images" (NIH's images/ folder
  beside the manifest).
- CheXpert ``train.csv``/``valid.csv``: the 14 observations kept as they are (1, 0, -1, blank);
  "Pleural Effusion" becomes "Effusion". patient_id = "patient00001", study_id =
  "patient00001/study1" from the Path; view = the AP/PA value for frontal images (AP, PA, and
  rarely LL/RL; "FRONTAL" when blank), LATERAL for lateral ones. Default image_root "" (the Path
  column is kept, i.e. the manifest lives in the folder holding CheXpert-v1.0-small/).
- MIMIC-CXR-JPG ``mimic-cxr-2.0.0-chexpert.csv`` or ``-negbio.csv`` (subject_id, study_id, 14
  observations) joined with ``mimic-cxr-2.0.0-metadata.csv`` (one row per dicom_id) on subject and
  study: path = files/p10/p10000032/s50414267/<dicom_id>.jpg; images of studies without a label
  row get blank labels. Default image_root "" (the manifest lives in the MIMIC-CXR-JPG root).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from chestxr.core import ManifestError
from chestxr.data._findings import NIH14, NO_FINDING, canonical_name
from chestxr.data._schema import Problem, normalize_view

Table = Union[str, Path, pd.DataFrame]
SOURCES = ("nih", "chexpert", "mimic")
_CHEXPERT_IDS = re.compile(r"(patient\d+)/(study\d+)/")
_CHEXPERT_RAW = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


def read_table(table: Table, required: list[str], what: str, columns: Optional[list[str]] = None) -> pd.DataFrame:
    """A label table (CSV or .csv.gz path, or a DataFrame) as strings; ManifestError if columns are missing.

    ``columns``: read only these (when present), to keep memory down on big tables.
    """
    if isinstance(table, pd.DataFrame):
        df = table.astype(str).astype(object)
        where = "<DataFrame>"
    else:
        where = str(table)
        if not Path(table).is_file():
            raise ManifestError(where, [Problem(None, None, None, f"{what} table not found", "check the path", "file")])
        try:
            keep = None if columns is None else set(columns) | set(required)
            df = pd.read_csv(
                table,
                dtype=object,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8-sig",
                usecols=None if keep is None else (lambda c: str(c).strip() in keep),
            )
        except (UnicodeDecodeError, pd.errors.ParserError, OSError, EOFError) as exc:
            raise ManifestError(
                where,
                [
                    Problem(
                        None,
                        None,
                        None,
                        f"cannot read {what} table: {exc}",
                        "pass the original CSV (or .csv.gz)",
                        "file",
                    )
                ],
            ) from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(
            where,
            [
                Problem(
                    1,
                    c,
                    None,
                    f"column {c!r} missing: this is not a {what} table",
                    f"columns present: {list(df.columns)[:20]}",
                    "missing_column",
                )
                for c in missing
            ],
        )
    return df


def _strip(values: pd.Series) -> list[str]:
    return [str(v).strip() for v in values.to_numpy(dtype=object)]


def _map_unique(values: pd.Series, fn) -> np.ndarray:
    """fn applied to each distinct value only (tables have few distinct views, sexes, ages)."""
    codes, uniq = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=False)
    mapped = [fn(str(u).strip()) for u in uniq]
    out = np.empty(max(len(mapped), 1), dtype=object if not mapped or isinstance(mapped[0], str) else np.float64)
    out[: len(mapped)] = mapped
    return out[codes]


def _join(root: str, names: list[str]) -> list[str]:
    root = str(root).replace("\\", "/").rstrip("/")
    return list(names) if not root else [f"{root}/{v}" for v in names]


def _age(text: str) -> float:
    t = text[:-1] if text[-1:] in ("Y", "y") else text
    try:
        return float(t)
    except ValueError:
        return float("nan")


def _sex(text: str) -> str:
    t = text[:1].upper()
    return t if t in ("F", "M") else ""


def _label_columns(df: pd.DataFrame, raw_names: list[str], where: str) -> dict[str, np.ndarray]:
    """Raw label strings ('1.0', '0.0', '-1.0', '', soft) -> canonical name: float64 column."""
    from chestxr.data._manifest_checks import parse_labels

    out: dict[str, np.ndarray] = {}
    problems = []
    for raw in raw_names:
        vals, bad = parse_labels(df[raw])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problems.append(
                Problem(
                    i + 2,
                    raw,
                    str(df[raw].iloc[i]),
                    f"{int(bad.sum())} value(s) are not labels",
                    "expected 1, 0, -1 or blank",
                    "invalid_label",
                )
            )
        out[canonical_name(raw)] = vals
    if problems:
        raise ManifestError(where, problems)
    return out


def convert_nih(table: Table, *, image_root: str = "images") -> pd.DataFrame:
    """NIH ChestX-ray14 Data_Entry table -> manifest frame (see the module docstring)."""
    df = read_table(
        table,
        ["Image Index", "Finding Labels", "Patient ID", "View Position"],
        "NIH Data_Entry",
        columns=["Follow-up #", "Patient Age", "Patient Gender"],
    )
    where = str(table) if not isinstance(table, pd.DataFrame) else "<DataFrame>"
    names = NIH14 + [NO_FINDING]
    codes, combos = pd.factorize(df["Finding Labels"].to_numpy(dtype=object))
    per_combo = np.zeros((len(combos), len(names)), dtype=np.float64)
    unknown: set[str] = set()
    for k, combo in enumerate(combos):
        for item in str(combo).split("|"):
            item = item.strip()
            if not item:
                continue
            canon = canonical_name(item)
            if canon in names:
                per_combo[k, names.index(canon)] = 1.0
            else:
                unknown.add(item)
    if unknown:
        raise ManifestError(
            where,
            [
                Problem(
                    None,
                    "Finding Labels",
                    u,
                    "not an NIH ChestX-ray14 finding",
                    f"expected one of {names}",
                    "invalid_label",
                )
                for u in sorted(unknown)
            ],
        )
    labels = per_combo[codes] if len(df) else np.zeros((0, len(names)))
    pid = [v.zfill(8) for v in _strip(df["Patient ID"])]
    follow = [v.zfill(3) for v in _strip(df["Follow-up #"])] if "Follow-up #" in df.columns else ["000"] * len(df)
    out = pd.DataFrame(
        {
            "path": _join(image_root, _strip(df["Image Index"])),
            "patient_id": pid,
            "study_id": [f"{p}_{f}" for p, f in zip(pid, follow)],
            "view": _map_unique(df["View Position"], normalize_view),
            "sex": _map_unique(df["Patient Gender"], _sex) if "Patient Gender" in df.columns else "",
            "age": _map_unique(df["Patient Age"], _age) if "Patient Age" in df.columns else np.nan,
        }
    )
    for j, name in enumerate(names):
        out[name] = labels[:, j]
    return out


def convert_chexpert(table: Table, *, image_root: str = "") -> pd.DataFrame:
    """CheXpert train.csv / valid.csv -> manifest frame (see the module docstring)."""
    df = read_table(table, ["Path", "Frontal/Lateral"] + _CHEXPERT_RAW[1:], "CheXpert")
    where = str(table) if not isinstance(table, pd.DataFrame) else "<DataFrame>"
    path = _strip(df["Path"])
    found = [_CHEXPERT_IDS.search(p) for p in path]
    bad = [i for i, m in enumerate(found) if m is None]
    if bad:
        raise ManifestError(
            where,
            [
                Problem(
                    bad[0] + 2,
                    "Path",
                    path[bad[0]],
                    f"{len(bad)} path(s) lack patientNNNNN/studyN/",
                    "pass CheXpert's own train.csv/valid.csv",
                    "invalid_path",
                )
            ],
        )
    ids = [m for m in found if m is not None]  # every path matched (checked above)
    patient = [m.group(1) for m in ids]
    frontal = _map_unique(df["Frontal/Lateral"], lambda v: "F" if v.lower() == "frontal" else "L") == "F"
    appa = _map_unique(df["AP/PA"], normalize_view) if "AP/PA" in df.columns else np.full(len(df), "", dtype=object)
    view = np.where(frontal, np.where(appa == "", "FRONTAL", appa), "LATERAL")
    out = pd.DataFrame(
        {
            "path": _join(image_root, path),
            "patient_id": patient,
            "study_id": [f"{m.group(1)}/{m.group(2)}" for m in ids],
            "view": view,
            "sex": _map_unique(df["Sex"], _sex) if "Sex" in df.columns else "",
            "age": _map_unique(df["Age"], _age) if "Age" in df.columns else np.nan,
        }
    )
    raw_names = [c for c in _CHEXPERT_RAW if c in df.columns]
    for name, vals in _label_columns(df, raw_names, where).items():
        out[name] = vals
    return out


def convert_mimic(table: Table, *, metadata: Table, image_root: str = "") -> pd.DataFrame:
    """MIMIC-CXR-JPG chexpert/negbio labels + metadata -> manifest frame, one row per image."""
    labels = read_table(table, ["subject_id", "study_id"], "MIMIC-CXR chexpert/negbio labels")
    meta = read_table(metadata, ["dicom_id", "subject_id", "study_id"], "MIMIC-CXR metadata")
    where = str(table) if not isinstance(table, pd.DataFrame) else "<DataFrame>"
    raw_names = [c for c in _CHEXPERT_RAW if c in labels.columns]
    if not raw_names:
        raise ManifestError(
            where,
            [
                Problem(
                    1,
                    None,
                    None,
                    "no CheXpert observation columns found",
                    f"expected some of {_CHEXPERT_RAW}",
                    "missing_column",
                )
            ],
        )
    for df in (labels, meta):
        for c in ("subject_id", "study_id"):
            df[c] = [v.lstrip("ps") for v in _strip(df[c])]
    labels = labels.drop_duplicates(["subject_id", "study_id"])
    merged = meta.merge(
        labels[["subject_id", "study_id"] + raw_names], on=["subject_id", "study_id"], how="left", indicator=True
    )
    unlabeled = int((merged["_merge"] == "left_only").sum())
    if unlabeled:
        warnings.warn(
            f"{where}: {unlabeled} image(s) belong to studies without a label row; their labels are blank", stacklevel=2
        )
    for c in raw_names:
        merged[c] = merged[c].fillna("").astype(str)
    subj, study = _strip(merged["subject_id"]), _strip(merged["study_id"])
    rel = [f"files/p{s[:2]}/p{s}/s{t}/{d}.jpg" for s, t, d in zip(subj, study, _strip(merged["dicom_id"]))]
    view = (
        _map_unique(merged["ViewPosition"].fillna(""), normalize_view)
        if "ViewPosition" in merged.columns
        else np.full(len(merged), "", dtype=object)
    )
    out = pd.DataFrame(
        {
            "path": _join(image_root, rel),
            "patient_id": subj,
            "study_id": study,
            "view": view,
        }
    )
    for name, vals in _label_columns(merged, raw_names, where).items():
        out[name] = vals
    return out


def convert_table(
    source: str, table: Table, *, image_root: Optional[str] = None, metadata: Optional[Table] = None
) -> pd.DataFrame:
    """Dispatch to convert_nih / convert_chexpert / convert_mimic by ``source``."""
    if source == "nih":
        return convert_nih(table, image_root="images" if image_root is None else image_root)
    if source == "chexpert":
        return convert_chexpert(table, image_root=image_root or "")
    if source == "mimic":
        if metadata is None:
            raise ManifestError(
                str(table),
                [
                    Problem(
                        None,
                        None,
                        None,
                        "MIMIC-CXR needs the metadata table (dicom_id, subject_id, study_id, ViewPosition)",
                        "pass --metadata mimic-cxr-2.0.0-metadata.csv.gz",
                        "file",
                    )
                ],
            )
        return convert_mimic(table, metadata=metadata, image_root=image_root or "")
    raise ManifestError(str(table), [Problem(None, None, source, f"unknown source; choose one of {list(SOURCES)}")])
