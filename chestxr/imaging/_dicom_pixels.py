"""DICOM files to pixels: parse, check the header filters, decode the first frame, and run the grayscale pipeline
(Modality LUT -> VOI LUT or window -> [0, 1] by the real output range -> MONOCHROME1 inverted), or convert colour.

The steps and their fallbacks are described in chestxr/imaging/_readers.py (the entry point, which picks this
module by file content). Returns float32 (H, W) in [0, 1] and technical metadata only (never identifiers or UIDs).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from chestxr.core import HeaderCheckError, ImageReadError
from chestxr.imaging._acquisition import acquisition_meta
from chestxr.imaging._decoding import META_KEYS, damage_hint, rescale, says_truncated, short
from chestxr.imaging._read_options import ReadOptions

_GRAY = ("MONOCHROME1", "MONOCHROME2")


def read_dicom(path: Path, options: ReadOptions, *, force: bool) -> tuple[np.ndarray, dict[str, Any]]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=force)
    except Exception as exc:  # pydicom raises many types for broken files
        raise ImageReadError(path, f"cannot parse the DICOM header ({short(exc)}); {damage_hint(exc)}") from None
    _ensure_transfer_syntax(ds)
    meta = _dicom_meta(ds)
    if "PixelData" not in ds:
        raise ImageReadError(
            path,
            "DICOM has no PixelData (a truncated file, or a report / SR / "
            "presentation state?); export the image again or remove it from the manifest",
        )
    _check_header(path, meta, options)
    rows, cols = meta["rows"], meta["cols"]
    if not rows or not cols:
        raise ImageReadError(path, "DICOM has no Rows/Columns; the header is incomplete: export it again")
    if rows * cols > options.max_pixels:
        raise ImageReadError(
            path,
            f"image is {cols}x{rows} = {rows * cols:,} pixels, over the limit of "
            f"{options.max_pixels:,} (max_pixels); raise the limit if it is genuine",
        )
    photometric = meta["photometric"] or ""
    is_gray = photometric in _GRAY
    if not is_gray and not photometric and not options.allow_color:
        raise ImageReadError(
            path,
            "photometric interpretation missing is not grayscale (MONOCHROME1/2); fix the header "
            "or set preprocessing.allow_color: true to convert it",
        )
    if meta["frames"] > 1:
        warnings.warn(f"{path}: DICOM has {meta['frames']} frames; using the first", stacklevel=3)
        ds.pixel_array_options(index=0)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        hint = damage_hint(exc)
        if ds.file_meta.TransferSyntaxUID.is_compressed and not says_truncated(exc):
            hint += (
                "; if it opens elsewhere, install the decoders: pip install pylibjpeg "
                "pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle"
            )
        raise ImageReadError(
            path, f"cannot decode the pixel data ({meta['transfer_syntax']}: {short(exc)}); {hint}"
        ) from None
    if arr.ndim == 3 and meta["frames"] > 1 and arr.shape[0] == meta["frames"]:
        arr = arr[0]  # decoder ignored the index option
    try:
        if is_gray:
            out, voi, value_range = _gray_pipeline(ds, arr, options, path)
            if photometric == "MONOCHROME1":
                out = 1.0 - out
        else:
            out, voi, value_range = _color_to_gray(ds, arr, photometric, allow_color=options.allow_color, path=path)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(
            path, f"cannot apply the DICOM LUTs ({short(exc)}); try preprocessing.voi: ignore"
        ) from None
    if out.ndim != 2:
        raise ImageReadError(
            path,
            f"unexpected pixel array shape {arr.shape}; expected one 2-D frame: "
            "export the image as a single grayscale frame",
        )
    meta.update(voi=voi, value_range=value_range)
    return np.ascontiguousarray(out, dtype=np.float32), meta


def read_dicom_header(path: Path, *, force: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """(metadata as :func:`read_dicom` gives it, identifiers) from the header only (no pixel decoding).

    The identifiers (``patient_id``, ``study_uid``, ``sop_uid``; "" when absent) are for keyed hashing by
    the caller and must never be written anywhere as they are. ImageReadError when the header cannot be parsed."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=force, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for broken files
        raise ImageReadError(path, f"cannot parse the DICOM header ({short(exc)}); {damage_hint(exc)}") from None
    _ensure_transfer_syntax(ds)
    ids = {
        key: str(ds.get(keyword, "") or "").strip()
        for key, keyword in (
            ("patient_id", "PatientID"),
            ("study_uid", "StudyInstanceUID"),
            ("sop_uid", "SOPInstanceUID"),
        )
    }
    return _dicom_meta(ds), ids


def _ensure_transfer_syntax(ds: Any) -> None:
    """A DICOM read with force (no preamble/file meta) may lack (0002,0010): infer it from the encoding."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is None:
        implicit, little = True, True
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _dicom_meta(ds: Any) -> dict[str, Any]:
    """Technical header fields only (never identifiers or UIDs)."""
    meta: dict[str, Any] = dict.fromkeys(META_KEYS)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)

    def text(keyword: str) -> Optional[str]:
        value = ds.get(keyword)
        value = str(value).strip() if value is not None else ""
        return value or None

    def number(keyword: str) -> Optional[int]:
        try:
            value = ds.get(keyword)
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    meta.update(
        format="DICOM",
        modality=text("Modality"),
        body_part=text("BodyPartExamined"),
        view_position=text("ViewPosition"),
        photometric=(text("PhotometricInterpretation") or "").upper() or None,
        rows=number("Rows"),
        cols=number("Columns"),
        bits_stored=number("BitsStored"),
        transfer_syntax=(tsyntax.name if tsyntax is not None else None),
        frames=number("NumberOfFrames") or 1,
    )
    meta.update(acquisition_meta(ds))
    return meta


def _check_header(path: Path, meta: dict[str, Any], options: ReadOptions) -> None:
    checks = (
        ("modalities", "modality", "Modality (0008,0060)"),
        ("body_parts", "body_part", "BodyPartExamined (0018,0015)"),
        ("view_positions", "view_position", "ViewPosition (0018,5101)"),
    )
    for option, key, tag in checks:
        allowed = getattr(options, option)
        if allowed is None:
            continue
        value = (meta[key] or "").upper()
        if not value:
            raise HeaderCheckError(
                path,
                f"{tag} is missing but preprocessing.{option} = {list(allowed)}; "
                f"fix the header or set preprocessing.{option}: null",
            )
        if value not in allowed:
            raise HeaderCheckError(
                path,
                f"{tag} is {value!r}, not one of {list(allowed)} "
                f"(preprocessing.{option}); remove the image or widen the list",
            )


def check_dicom_header(path: str | os.PathLike, ds: Any, options: ReadOptions) -> dict[str, Any]:
    """Apply ``options``' header checks (modality, body part, view) to a parsed header ``ds`` (pixels not
    needed); raises HeaderCheckError naming ``path``. Returns the technical metadata (no identifiers)."""
    meta = _dicom_meta(ds)
    _check_header(Path(path), meta, options)
    return meta


def _gray_pipeline(ds: Any, arr: np.ndarray, options: ReadOptions, path: Path) -> tuple[np.ndarray, str, list[float]]:
    """Modality LUT -> VOI -> [0, 1]. Returns (image, which VOI was used, the range mapped to [0, 1])."""
    from pydicom.pixels import apply_modality_lut, apply_voi

    if not _rescale_usable(ds):
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        warnings.warn(
            f"{path}: RescaleSlope/RescaleIntercept {slope}/{intercept} is not usable (non-finite or zero "
            "slope); using the stored values and the image min/max (the file's window is in rescaled units)",
            stacklevel=4,
        )
        x = np.asarray(arr, dtype=np.float32)
        lo, hi = float(x.min()), float(x.max())
        return rescale(x, lo, hi), "minmax", [lo, hi]
    x = apply_modality_lut(arr, ds)
    if options.voi == "window":
        c, w = options.window  # type: ignore[misc]
        return _window(x, c, w, "LINEAR"), "window (options)", [c - w / 2, c + w / 2]
    if options.voi == "auto" and ds.get("VOILUTSequence"):
        xi = x if np.issubdtype(x.dtype, np.integer) else np.rint(x).astype(np.int64)
        item = ds.VOILUTSequence[0]
        n_entries = int(item.LUTDescriptor[0]) or 65536
        first = int(item.LUTDescriptor[1])
        table = apply_voi(np.arange(first, first + n_entries, dtype=np.int64), ds, index=0)
        lo, hi = float(table.min()), float(table.max())
        y = apply_voi(xi, ds, index=0).astype(np.float32)
        return rescale(y, lo, hi), "voi_lut", [lo, hi]
    if options.voi == "auto" and "WindowCenter" in ds and "WindowWidth" in ds:
        c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        finite = c is not None and w is not None and math.isfinite(c) and math.isfinite(w)
        if finite and (w >= 1 or (function != "LINEAR" and w > 0)):  # type: ignore[operator]
            return _window(x, c, w, function), f"window ({function.lower()})", [c - w / 2, c + w / 2]  # type: ignore[arg-type, operator]
        warnings.warn(f"{path}: ignoring invalid window center/width {c}/{w}; using the image min/max", stacklevel=4)
    x = np.asarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    return rescale(x, lo, hi), "minmax", [lo, hi]


def _rescale_usable(ds: Any) -> bool:
    """False when RescaleSlope is non-finite or zero, or RescaleIntercept non-finite (no Modality LUT
    Sequence, which would take precedence)."""
    if ds.get("ModalityLUTSequence") or "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
        return True
    slope = _first(ds.get("RescaleSlope", 1.0))
    intercept = _first(ds.get("RescaleIntercept", 0.0))
    if "RescaleSlope" in ds and ds.RescaleSlope in (None, ""):
        slope = 1.0
    if "RescaleIntercept" in ds and ds.RescaleIntercept in (None, ""):
        intercept = 0.0
    return (
        slope is not None and intercept is not None and math.isfinite(slope) and slope != 0 and math.isfinite(intercept)
    )


def _window(x: np.ndarray, c: float, w: float, function: str) -> np.ndarray:
    """Window to [0, 1]: DICOM PS3.3 C.11.2.1.2 with output range [0, 1]."""
    x = np.asarray(x, dtype=np.float32)
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))).astype(np.float32)
    if function == "LINEAR_EXACT":
        y = (x - c) / w + 0.5
    else:  # LINEAR (default; unknown functions fall back to it)
        w = max(w, 1.0 + 1e-6)
        y = (x - (c - 0.5)) / (w - 1.0) + 0.5
    return np.clip(y, 0.0, 1.0, out=y).astype(np.float32, copy=False)


def _color_to_gray(
    ds: Any, arr: np.ndarray, photometric: str, *, allow_color: bool = True, path: Optional[Path] = None
) -> tuple[np.ndarray, str, list[float]]:
    """RGB/YBR (decoded to RGB by pydicom) or PALETTE COLOR -> luma scaled by the stored range.

    Without ``allow_color`` only grey content (channels equal up to chestxr/imaging/_grey_content.py (GREY_TOLERANCE) of
    the range, e.g. a grey film saved as RGB or YBR_FULL_422 JPEG) is converted; real colour is an ImageReadError.
    """
    from pydicom.pixels import apply_color_lut

    from chestxr.imaging._grey_content import channel_spread, describe_spread, is_grey

    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    else:
        bits = int(ds.get("BitsStored") or 8)
    testable = arr.ndim == 3 and arr.shape[-1] == 3
    hi = float(2**bits - 1)
    if not allow_color:
        spread = channel_spread(arr, hi) if testable else None
        if spread is None or not is_grey(spread):
            raise ImageReadError(
                path or "?",
                f"photometric interpretation {photometric} is not grayscale (MONOCHROME1/2) and holds "
                f"{describe_spread(spread)}; set preprocessing.allow_color: true to convert it",
            )
    if not testable:
        raise ValueError(f"expected an RGB array, got shape {arr.shape}")
    gray = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    return rescale(gray, 0.0, hi), "color->gray", [0.0, hi]


def _first(value: Any) -> Optional[float]:
    try:
        if isinstance(value, (list, tuple)) or hasattr(value, "__getitem__") and not isinstance(value, str):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None
