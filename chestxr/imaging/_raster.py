"""PNG, JPEG, TIFF and BMP through Pillow into float32 (H, W) in [0, 1]; see chestxr/imaging/_readers.py.

A file in a colour mode whose content is grey (chestxr/imaging/_grey_content.py) is read as grayscale; real colour
needs ``preprocessing.allow_color``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from chestxr.core import ImageReadError
from chestxr.imaging._decoding import ACCEPTED_FORMATS, META_KEYS, PIL_FORMATS, damage_hint, format_list, rescale, short
from chestxr.imaging._grey_content import describe_spread, is_grey, pillow_spread

PIL_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")
#: Pillow modes that are grayscale (LA: gray + alpha, the alpha is dropped); any other mode is colour
_PIL_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def read_pillow_header(path: Path) -> dict[str, Any]:
    """Metadata of a PNG/JPEG/TIFF/BMP without decoding its pixels: ``format``, ``mode``, ``rows``, ``cols``,
    ``frames`` (the rest None). ImageReadError when Pillow cannot open it."""
    from PIL import Image, UnidentifiedImageError

    meta: dict[str, Any] = dict.fromkeys(META_KEYS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                meta.update(
                    format=im.format, mode=im.mode, rows=height, cols=width, frames=int(getattr(im, "n_frames", 1) or 1)
                )
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(
            path, f"cannot open as {format_list(pillow=True)} ({short(exc)}); {damage_hint(exc)}"
        ) from None
    return meta


def read_pillow(path: Path, options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image, UnidentifiedImageError

    meta: dict[str, Any] = dict.fromkeys(META_KEYS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            path, f"image is too large to open safely ({short(exc)}); check the file or downscale it"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(
            path, f"cannot open as {format_list(pillow=True)} ({short(exc)}); {damage_hint(exc)}"
        ) from None
    with im:
        width, height = im.size
        if width * height > options.max_pixels:
            raise ImageReadError(
                path,
                f"image is {width}x{height} = {width * height:,} pixels, over the "
                f"limit of {options.max_pixels:,} (max_pixels); raise the limit if it is genuine",
            )
        if im.format not in PIL_FORMATS:
            raise ImageReadError(
                path,
                f"{im.format} images are not accepted (accepted: {', '.join(ACCEPTED_FORMATS)}); convert it to PNG",
            )
        frames = int(getattr(im, "n_frames", 1) or 1)
        mode = im.mode
        # a colour mode holding grey content (channels equal up to GREY_TOLERANCE) is read as grayscale
        colour = not (options.allow_color or _pillow_is_gray(im))
        try:
            spread = pillow_spread(im) if colour else None
        except Exception as exc:
            raise ImageReadError(
                path, f"cannot decode the {im.format} data ({short(exc)}); {damage_hint(exc)}"
            ) from None
        if colour and (spread is None or not is_grey(spread)):
            raise ImageReadError(
                path,
                f"{im.format} mode {mode} is colour, not grayscale ({describe_spread(spread)}); set "
                "preprocessing.allow_color: true to convert it to gray (luma), as for colour DICOMs",
            )
        if frames > 1:
            warnings.warn(f"{path}: image has {frames} frames; using the first", stacklevel=3)
        try:
            arr, bit_depth = _pillow_to_gray(im)
        except Exception as exc:
            raise ImageReadError(
                path, f"cannot decode the {im.format} data ({short(exc)}); {damage_hint(exc)}"
            ) from None
        meta.update(
            format=im.format,
            mode=mode,
            bit_depth=bit_depth,
            rows=height,
            cols=width,
            frames=frames,
            photometric="MONOCHROME2",
            voi="none",
            value_range=[0.0, float(2**bit_depth - 1)],
        )
    return arr, meta


def _pillow_to_gray(im: Any) -> tuple[np.ndarray, int]:
    """float32 (H, W) in [0, 1] and the bit depth used to scale it."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im).astype(np.float32)
        return arr * np.float32(1.0 / 65535.0), 16
    if mode == "I":  # 16-bit PNG/TIFF opened as 32-bit int: values are in 0..65535
        arr = np.asarray(im).astype(np.float32)
        return np.clip(arr * np.float32(1.0 / 65535.0), 0.0, 1.0), 16
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        return rescale(arr, lo, hi), 32
    if mode != "L":
        im = im.convert("L")  # RGB/RGBA/P/LA/1/CMYK/YCbCr -> luma, alpha dropped
    arr = np.asarray(im).astype(np.float32)
    return arr * np.float32(1.0 / 255.0), 8


def _pillow_is_gray(im: Any) -> bool:
    """Grayscale modes, and palette images whose palette entries are all gray (R == G == B)."""
    if im.mode in _PIL_GRAY_MODES:
        return True
    if im.mode == "P" and "transparency" not in im.info:
        palette = im.getpalette() or []
        rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
        return bool(len(rgb)) and bool((rgb == rgb[:, :1]).all())
    return False
