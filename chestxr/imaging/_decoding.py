"""Decoding helpers shared by the DICOM and raster readers: the content checks every decoded image
passes, decoder-error hints, and the [0, 1] rescale."""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from chestxr.core import ImageReadError

#: images with fewer pixels than this on either side are refused (no radiograph is that small)
MIN_IMAGE_SIDE = 16
META_KEYS = (
    "format",
    "modality",
    "body_part",
    "view_position",
    "photometric",
    "rows",
    "cols",
    "bits_stored",
    "transfer_syntax",
    "frames",
    "mode",
    "bit_depth",
    "voi",
    "value_range",
    # acquisition (chestxr/imaging/_acquisition.py: monitoring's reference profile and inference log)
    "manufacturer",
    "manufacturer_model",
    "software_versions",
    "pixel_spacing",
    "kvp",
    "age_band",
    "sex",
)
#: every format read_image accepts (by content, never by extension), for error messages
PIL_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")
ACCEPTED_FORMATS = ("DICOM", *PIL_FORMATS)
#: what decoders say when the bytes ran out (then, and only then, the hint says "truncated")
_TRUNCATION_WORDS = ("truncat", "less than expected", "end of file", "eof", "unexpected end", "premature", "not enough")


def check_content(path: str | os.PathLike, image: np.ndarray, meta: Optional[dict[str, Any]] = None) -> None:
    """Refuse a decoded (H, W) image that carries no picture: smaller than MIN_IMAGE_SIDE on a side,
    holding NaN/inf, or constant. Raises ImageReadError naming the file and the reason."""
    h, w = image.shape[-2:] if image.ndim >= 2 else (1, int(image.size))
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ImageReadError(
            path,
            f"image is {w}x{h} pixels, below the minimum of {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} (MIN_IMAGE_SIDE): "
            "too small to be a radiograph; check the export",
        )
    finite = np.isfinite(image)
    if not finite.all():
        raise ImageReadError(
            path,
            f"decoded pixels hold {int((~finite).sum()):,} NaN/inf values: not a usable image; export it again",
        )
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        voi = (meta or {}).get("voi") if (meta or {}).get("format") == "DICOM" else None
        after = f" after the VOI step ({voi}, range {(meta or {}).get('value_range')})" if voi else ""
        hint = "; widen preprocessing.window or set preprocessing.voi: ignore" if voi and "window" in voi else ""
        raise ImageReadError(
            path,
            f"image is constant (every pixel = {lo:.4g}{after}): it carries no picture; "
            f"check the export or remove it from the manifest{hint}",
        )


def rescale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if hi <= lo:
        return np.zeros_like(x)
    y = (x - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(y, 0.0, 1.0, out=y)


def format_list(*, pillow: bool = False) -> str:
    names = list(PIL_FORMATS if pillow else ACCEPTED_FORMATS)
    return ", ".join(names[:-1]) + " or " + names[-1]


def says_truncated(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, EOFError) or any(word in text for word in _TRUNCATION_WORDS)


def damage_hint(exc: BaseException) -> str:
    """What to tell the user about a decoder error: "truncated" only when the decoder said the bytes ran out."""
    if says_truncated(exc):
        return "the file may be truncated or corrupt: export it again"
    return "the decoder could not read it: export it again, or report it with CHESTXR_DEBUG=1"


def short(exc: BaseException, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
