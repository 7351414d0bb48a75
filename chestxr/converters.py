"""Converters from published label tables to chestxr manifests (vectorized: 112k NIH rows in ~1 s).

Each returns a DataFrame in manifest layout: ``path`` (image_root joined with the table's image
name, '/' separated, relative unless image_root is absolute), ``patient_id``, ``study_id``,
``view``, ``sex`` (F/M/""), ``age`` (float, NaN unknown), then canonical finding columns as
float64 (1, 0, -1 uncertain, NaN blank). Write it with ``chestxr.manifest.write_manifest``.

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

import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from chestxr.errors import ManifestError
from chestxr.findings import CHEXPERT14, NIH14, NO_FINDING, canonical_name
from chestxr.manifest import Problem, normalize_view

Table = Union[str, Path, pd.DataFrame]
SOURCES = ("nih", "chexpert", "mimic")
_CHEXPERT_RAW = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                 "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                 "Pleural Other", "Fracture", "Support Devices"]


def read_table(table: Table, required: list[str], what: str) -> pd.DataFrame:
    """A label table (CSV or .csv.gz path, or a DataFrame) as strings; ManifestError if columns are missing."""
    if isinstance(table, pd.DataFrame):
        df = table.astype(str)
        where = "<DataFrame>"
    else:
        where = str(table)
        if not Path(table).is_file():
            raise ManifestError(where, [Problem(None, None, None, f"{what} table not found", "check the path", "file")])
        try:
            df = pd.read_csv(table, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
        except (UnicodeDecodeError, pd.errors.ParserError, OSError, EOFError) as exc:
            raise ManifestError(where, [Problem(None, None, None, f"cannot read {what} table: {exc}",
                                                "pass the original CSV (or .csv.gz)", "file")]) from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(where, [Problem(1, c, None, f"column {c!r} missing: this is not a {what} table",
                                            f"columns present: {list(df.columns)[:20]}", "missing_column")
                                    for c in missing])
    return df


def _join(root: str, names: pd.Series) -> pd.Series:
    root = str(root).replace("\\", "/").rstrip("/")
    return names if not root else root + "/" + names


def _age(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values.str.strip().str.replace(r"[Yy]$", "", regex=True), errors="coerce").to_numpy(np.float64)


def _sex(values: pd.Series) -> pd.Series:
    v = values.str.strip().str.upper().str[:1]
    return v.where(v.isin(["F", "M"]), "")


def _label_columns(df: pd.DataFrame, raw_names: list[str], where: str) -> dict[str, np.ndarray]:
    """Raw label strings ('1.0', '0.0', '-1.0', '', soft) -> canonical name: float64 column."""
    from chestxr.manifest_checks import parse_labels

    out: dict[str, np.ndarray] = {}
    problems = []
    for raw in raw_names:
        vals, bad = parse_labels(df[raw])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problems.append(Problem(i + 2, raw, str(df[raw].iloc[i]), f"{int(bad.sum())} value(s) are not labels",
                                    "expected 1, 0, -1 or blank", "invalid_label"))
        out[canonical_name(raw)] = vals
    if problems:
        raise ManifestError(where, problems)
    return out


def convert_nih(table: Table, *, image_root: str = "images") -> pd.DataFrame:
    """NIH ChestX-ray14 Data_Entry table -> manifest frame (see the module docstring)."""
    df = read_table(table, ["Image Index", "Finding Labels", "Patient ID", "View Position"], "NIH Data_Entry")
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
        raise ManifestError(where, [Problem(None, "Finding Labels", u, "not an NIH ChestX-ray14 finding",
                                            f"expected one of {names}", "invalid_label") for u in sorted(unknown)])
    labels = per_combo[codes] if len(df) else np.zeros((0, len(names)))
    pid = df["Patient ID"].str.strip().str.zfill(8)
    follow = df["Follow-up #"].str.strip().str.zfill(3) if "Follow-up #" in df.columns else pd.Series("000", index=df.index)
    out = pd.DataFrame({
        "path": _join(image_root, df["Image Index"].str.strip()),
        "patient_id": pid,
        "study_id": pid + "_" + follow,
        "view": df["View Position"].str.strip().str.upper(),
        "sex": _sex(df["Patient Gender"]) if "Patient Gender" in df.columns else "",
        "age": _age(df["Patient Age"]) if "Patient Age" in df.columns else np.nan,
    })
    for j, name in enumerate(names):
        out[name] = labels[:, j]
    return out


def convert_chexpert(table: Table, *, image_root: str = "") -> pd.DataFrame:
    """CheXpert train.csv / valid.csv -> manifest frame (see the module docstring)."""
    df = read_table(table, ["Path", "Frontal/Lateral"] + _CHEXPERT_RAW[1:], "CheXpert")
    where = str(table) if not isinstance(table, pd.DataFrame) else "<DataFrame>"
    path = df["Path"].str.strip()
    ids = path.str.extract(r"(patient\d+)/(study\d+)/")
    bad = ids[0].isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ManifestError(where, [Problem(i + 2, "Path", path.iloc[i], f"{int(bad.sum())} path(s) lack "
                                            "patientNNNNN/studyN/", "pass CheXpert's own train.csv/valid.csv",
                                            "invalid_path")])
    frontal = df["Frontal/Lateral"].str.strip().str.lower() == "frontal"
    appa = df["AP/PA"].str.strip().str.upper() if "AP/PA" in df.columns else pd.Series("", index=df.index)
    view = np.where(frontal, np.where(appa == "", "FRONTAL", appa), "LATERAL")
    out = pd.DataFrame({
        "path": _join(image_root, path),
        "patient_id": ids[0],
        "study_id": ids[0] + "/" + ids[1],
        "view": view,
        "sex": _sex(df["Sex"]) if "Sex" in df.columns else "",
        "age": _age(df["Age"]) if "Age" in df.columns else np.nan,
    })
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
        raise ManifestError(where, [Problem(1, None, None, "no CheXpert observation columns found",
                                            f"expected some of {_CHEXPERT_RAW}", "missing_column")])
    for df in (labels, meta):
        for c in ("subject_id", "study_id"):
            df[c] = df[c].str.strip().str.replace(r"^[ps]", "", regex=True)
    labels = labels.drop_duplicates(["subject_id", "study_id"])
    merged = meta.merge(labels[["subject_id", "study_id"] + raw_names], on=["subject_id", "study_id"],
                        how="left", indicator=True)
    unlabeled = int((merged["_merge"] == "left_only").sum())
    if unlabeled:
        warnings.warn(f"{where}: {unlabeled} image(s) belong to studies without a label row; their labels are blank",
                      stacklevel=2)
    for c in raw_names:
        merged[c] = merged[c].fillna("").astype(str)
    subj, study = merged["subject_id"].astype(str), merged["study_id"].astype(str)
    rel = "files/p" + subj.str[:2] + "/p" + subj + "/s" + study + "/" + merged["dicom_id"].str.strip() + ".jpg"
    view = merged["ViewPosition"].astype(str) if "ViewPosition" in merged.columns else pd.Series("", index=merged.index)
    out = pd.DataFrame({
        "path": _join(image_root, rel),
        "patient_id": subj,
        "study_id": study,
        "view": [normalize_view(v) for v in view],
    })
    for name, vals in _label_columns(merged, raw_names, where).items():
        out[name] = vals
    return out


def convert_table(source: str, table: Table, *, image_root: Optional[str] = None,
                  metadata: Optional[Table] = None) -> pd.DataFrame:
    """Dispatch to convert_nih / convert_chexpert / convert_mimic by ``source``."""
    if source == "nih":
        return convert_nih(table, image_root="images" if image_root is None else image_root)
    if source == "chexpert":
        return convert_chexpert(table, image_root=image_root or "")
    if source == "mimic":
        if metadata is None:
            raise ManifestError(str(table), [Problem(None, None, None, "MIMIC-CXR needs the metadata table "
                                                     "(dicom_id, subject_id, study_id, ViewPosition)",
                                                     "pass --metadata mimic-cxr-2.0.0-metadata.csv.gz", "file")])
        return convert_mimic(table, metadata=metadata, image_root=image_root or "")
    raise ManifestError(str(table), [Problem(None, None, source, f"unknown source; choose one of {list(SOURCES)}")])


__all__ = ["convert_nih", "convert_chexpert", "convert_mimic", "convert_table", "read_table", "SOURCES", "CHEXPERT14"]
