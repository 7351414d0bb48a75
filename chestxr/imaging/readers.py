"""Read one radiograph (DICOM, PNG, JPEG, TIFF or BMP) into a float32 (H, W) array in [0, 1].

The format is chosen by CONTENT, never by extension: the ``DICM`` magic at byte 128 (or, for a
DICOM written without its 128-byte preamble, a first tag in group 0x0002/0x0008) selects pydicom;
PNG/JPEG (and TIFF/BMP) signatures select Pillow.

DICOM pipeline, in the order of the standard's grayscale pipeline (PS3.4 N.2):

1. decode the first frame (native, JPEG baseline/lossless, JPEG-LS, JPEG 2000, RLE via pylibjpeg);
2. Modality LUT: RescaleSlope/RescaleIntercept or a Modality LUT Sequence (signed
   PixelRepresentation is honoured by the decoder);
3. VOI: ``ReadOptions.voi`` = "auto" uses the VOI LUT Sequence, else WindowCenter/WindowWidth
   (first value; VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID), else nothing; "ignore" skips the
   file's VOI; "window" uses ``ReadOptions.window = (center, width)``;
4. scale to [0, 1] by the REAL output range of the step before: a window maps
   [c - w/2, c + w/2] onto [0, 1] (DICOM LINEAR formula); a VOI LUT is divided by the min/max of
   its own table entries; with no VOI the image's own min/max after the Modality LUT is used
   (a constant image gives zeros). Never a fixed 255 or a BitsStored assumption;
5. MONOCHROME1 is inverted (``1 - x``) so that bright always means dense (bone white).

Broken parameters fall back with a warning where a sound fallback exists: a non-finite or zero
RescaleSlope (or a non-finite RescaleIntercept) uses the stored values and the image min/max (the
file's window is in rescaled units, so it is ignored too); a non-finite, zero or negative
WindowCenter/WindowWidth uses the image min/max.

PNG/JPEG/TIFF/BMP: 8-bit gray / 255, 16-bit gray (``I;16``/``I``) / 65535, gray + alpha (LA) and
palette images with an all-gray palette as gray. Colour follows the same rule as DICOM: a colour
image (RGB/RGBA/CMYK/YCbCr, a colour palette; DICOM RGB/YBR/PALETTE COLOR) is refused unless
``preprocessing.allow_color`` is true, then converted to luma (ITU-R 601-2, alpha dropped) / 255.

Content checks after decoding (both formats): an image smaller than ``MIN_IMAGE_SIDE`` (16) pixels
on either side (1x1, 1x40000), holding NaN/inf, or constant (no contrast left: a blank export, an
all-zero PNG, a window that maps every pixel to 0 or 1) is refused with an ImageReadError: it
carries no picture and must never be scored as if it did.

Every failure is an :class:`~chestxr.errors.ImageReadError` naming the file and what to do;
header filters raise :class:`~chestxr.errors.HeaderCheckError`. The metadata dict never holds
patient identifiers (no names, IDs, dates, accession numbers or UIDs).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from chestxr.core.errors import ConfigError, HeaderCheckError, ImageReadError
from chestxr.imaging.decoding import (  # noqa: F401  (MIN_IMAGE_SIDE, check_content: public here too)
    ACCEPTED_FORMATS,
    META_KEYS,
    MIN_IMAGE_SIDE,
    check_content,
    damage_hint,
    format_list,
    says_truncated,
)
from chestxr.imaging.decoding import (
    rescale as _rescale,
)
from chestxr.imaging.decoding import (
    short as _short,
)
from chestxr.imaging.raster import PIL_MAGIC, read_pillow

DEFAULT_MAX_PIXELS = 100_000_000
VOI_MODES = ("auto", "ignore", "window")
_GRAY = ("MONOCHROME1", "MONOCHROME2")


@dataclass(frozen=True)
class ReadOptions:
    """How to turn a file into pixels, and which DICOM headers to accept.

    voi: "auto" | "ignore" | "window" (then ``window`` = (center, width) in Modality-LUT units).
    allow_color: convert colour images (DICOM RGB/YBR/PALETTE COLOR; PNG/JPEG/TIFF/BMP RGB, RGBA,
    CMYK, YCbCr, colour palettes) to gray instead of refusing them. modalities / body_parts / view_positions: None (accept all) or the allowed
    values of (0008,0060) / (0018,0015) / (0018,5101), compared case-insensitively; checked for
    DICOM only (PNG/JPEG carry no header). max_pixels: refuse larger images (decompression bombs).
    """

    voi: str = "auto"
    window: Optional[tuple[float, float]] = None
    allow_color: bool = False
    modalities: Optional[tuple[str, ...]] = None
    body_parts: Optional[tuple[str, ...]] = None
    view_positions: Optional[tuple[str, ...]] = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.voi not in VOI_MODES:
            raise ConfigError(f"preprocessing.voi: {self.voi!r} is not one of {list(VOI_MODES)}")
        if self.window is not None:
            c, w = (float(v) for v in self.window)
            if not w > 0:
                raise ConfigError(f"preprocessing.window: width must be > 0, got {w}")
            object.__setattr__(self, "window", (c, w))
        if self.voi == "window" and self.window is None:
            raise ConfigError('preprocessing.voi is "window": set preprocessing.window: [center, width]')
        for name in ("modalities", "body_parts", "view_positions"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, str):
                    value = [value]
                object.__setattr__(self, name, tuple(str(v).strip().upper() for v in value))
        if int(self.max_pixels) <= 0:
            raise ConfigError(f"max_pixels must be > 0, got {self.max_pixels}")

    @classmethod
    def from_config(cls, pre: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> "ReadOptions":
        """Options from a :class:`chestxr.config.PreprocessConfig`."""
        return cls(
            voi=pre.voi,
            window=tuple(pre.window) if pre.window is not None else None,
            allow_color=pre.allow_color,
            modalities=pre.modalities,
            body_parts=pre.body_parts,
            view_positions=pre.view_positions,
            max_pixels=int(getattr(pre, "max_pixels", None) or max_pixels),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (used in cache keys)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def read_image(path: str | os.PathLike, options: ReadOptions | None = None) -> np.ndarray:
    """Read a DICOM/PNG/JPEG file as float32 (H, W) in [0, 1]; see the module docstring."""
    return read_image_with_meta(path, options)[0]


def read_image_with_meta(
    path: str | os.PathLike, options: ReadOptions | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Like :func:`read_image`, plus a metadata dict with the keys in ``META_KEYS``.

    Returns (pixels float32 (H, W) in [0, 1], meta). Missing values are None. No identifiers.
    """
    options = options or ReadOptions()
    kind = sniff_format(path)
    try:
        if kind == "dicom" or kind == "dicom-nopreamble":
            out, meta = _read_dicom(Path(path), options, force=kind == "dicom-nopreamble")
        else:
            out, meta = read_pillow(Path(path), options)
        check_content(path, out, meta)
        return out, meta
    except ImageReadError:
        raise
    except Exception as exc:  # safety net: a library error on an odd file never escapes unwrapped
        raise ImageReadError(
            path,
            f"cannot read the image ({_short(exc)}); the file may be corrupt "
            "or unusual: export it again, or report it with CHESTXR_DEBUG=1",
        ) from None


def sniff_format(path: str | os.PathLike) -> str:
    """ "dicom", "dicom-nopreamble" or "pillow" from the first bytes; ImageReadError otherwise."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except FileNotFoundError:
        raise ImageReadError(
            path, "file not found; check the path (relative manifest paths resolve against the manifest's folder)"
        ) from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image file") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot open the file ({exc.strerror}); check permissions") from None
    if not head:
        raise ImageReadError(path, "file is empty (0 bytes); copy or export it again")
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(PIL_MAGIC):
        return "pillow"
    if len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00"):
        return "dicom-nopreamble"  # first tag in group 0x0002/0x0008, little endian
    raise ImageReadError(
        path,
        f"not an accepted image: not a {format_list()} file (recognised by content; "
        f"{len(head)}+ bytes of something else); check that it is an image and was copied completely",
    )


# --------------------------------------------------------------------------- DICOM


def _read_dicom(path: Path, options: ReadOptions, *, force: bool) -> tuple[np.ndarray, dict[str, Any]]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=force)
    except Exception as exc:  # pydicom raises many types for broken files
        raise ImageReadError(path, f"cannot parse the DICOM header ({_short(exc)}); {damage_hint(exc)}") from None
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
    if not is_gray and not options.allow_color:
        raise ImageReadError(
            path,
            f"photometric interpretation {photometric or 'missing'} is not "
            "grayscale (MONOCHROME1/2); set preprocessing.allow_color: true to convert it",
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
            path, f"cannot decode the pixel data ({meta['transfer_syntax']}: {_short(exc)}); {hint}"
        ) from None
    if arr.ndim == 3 and meta["frames"] > 1 and arr.shape[0] == meta["frames"]:
        arr = arr[0]  # decoder ignored the index option
    try:
        if is_gray:
            out, voi, value_range = _gray_pipeline(ds, arr, options, path)
            if photometric == "MONOCHROME1":
                out = 1.0 - out
        else:
            out, voi, value_range = _color_to_gray(ds, arr, photometric)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(
            path, f"cannot apply the DICOM LUTs ({_short(exc)}); try preprocessing.voi: ignore"
        ) from None
    if out.ndim != 2:
        raise ImageReadError(
            path,
            f"unexpected pixel array shape {arr.shape}; expected one 2-D frame: "
            "export the image as a single grayscale frame",
        )
    meta.update(voi=voi, value_range=value_range)
    return np.ascontiguousarray(out, dtype=np.float32), meta


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
        return _rescale(x, lo, hi), "minmax", [lo, hi]
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
        return _rescale(y, lo, hi), "voi_lut", [lo, hi]
    if options.voi == "auto" and "WindowCenter" in ds and "WindowWidth" in ds:
        c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        finite = c is not None and w is not None and math.isfinite(c) and math.isfinite(w)
        if finite and (w >= 1 or (function != "LINEAR" and w > 0)):  # type: ignore[operator]
            return _window(x, c, w, function), f"window ({function.lower()})", [c - w / 2, c + w / 2]  # type: ignore[arg-type, operator]
        warnings.warn(f"{path}: ignoring invalid window center/width {c}/{w}; using the image min/max", stacklevel=4)
    x = np.asarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    return _rescale(x, lo, hi), "minmax", [lo, hi]


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


def _color_to_gray(ds: Any, arr: np.ndarray, photometric: str) -> tuple[np.ndarray, str, list[float]]:
    """RGB/YBR (decoded to RGB by pydicom) or PALETTE COLOR -> luma scaled by the stored range."""
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    else:
        bits = int(ds.get("BitsStored") or 8)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an RGB array, got shape {arr.shape}")
    hi = float(2**bits - 1)
    gray = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    return _rescale(gray, 0.0, hi), "color->gray", [0.0, hi]


def _first(value: Any) -> Optional[float]:
    try:
        if isinstance(value, (list, tuple)) or hasattr(value, "__getitem__") and not isinstance(value, str):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None
