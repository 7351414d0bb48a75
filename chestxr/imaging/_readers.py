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
palette images with an all-gray palette as gray. Colour follows the same rule as DICOM: an image in
a colour mode (RGB/RGBA/CMYK/YCbCr, a palette; DICOM RGB/YBR/PALETTE COLOR) whose channels agree on every
pixel up to chestxr/imaging/_grey_content.py (GREY_TOLERANCE) (8 of 255: JPEG chroma noise) is grey content and
read as gray; real colour is refused unless ``preprocessing.allow_color`` is true. Both are converted to
luma (ITU-R 601-2, alpha dropped) / 255, so grey content reads to the same values either way.

Content checks after decoding (both formats): an image smaller than ``MIN_IMAGE_SIDE`` (16) pixels
on either side (1x1, 1x40000), holding NaN/inf, or constant (no contrast left: a blank export, an
all-zero PNG, a window that maps every pixel to 0 or 1) is refused with an ImageReadError: it
carries no picture and must never be scored as if it did.

Every failure is an :class:`~chestxr.core.ImageReadError` naming the file and what to do;
header filters raise :class:`~chestxr.core.HeaderCheckError`. The metadata dict never holds
patient identifiers (no names, IDs, dates, accession numbers or UIDs).

The DICOM pipeline is chestxr/imaging/_dicom_pixels.py, Pillow formats chestxr/imaging/_raster.py, the options
chestxr/imaging/_read_options.py; all public names are in :mod:`chestxr.imaging`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chestxr.core import ImageReadError
from chestxr.imaging._decoding import check_content, format_list, short
from chestxr.imaging._dicom_pixels import read_dicom, read_dicom_header
from chestxr.imaging._raster import PIL_MAGIC, read_pillow, read_pillow_header
from chestxr.imaging._read_options import ReadOptions


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
            out, meta = read_dicom(Path(path), options, force=kind == "dicom-nopreamble")
        else:
            out, meta = read_pillow(Path(path), options)
        check_content(path, out, meta)
        return out, meta
    except ImageReadError:
        raise
    except Exception as exc:  # safety net: a library error on an odd file never escapes unwrapped
        raise ImageReadError(
            path,
            f"cannot read the image ({short(exc)}); the file may be corrupt "
            "or unusual: export it again, or report it with CHESTXR_DEBUG=1",
        ) from None


@dataclass(frozen=True)
class ImageHeader:
    """An image file's header, read without decoding its pixels: ``meta`` (the keys of ``META_KEYS``,
    None where absent; no identifiers) and, for DICOM, the identifiers a caller may only hash with a
    key (``patient_id``, ``study_uid``, ``sop_uid``; "" when absent or not DICOM)."""

    meta: dict[str, Any]
    patient_id: str = ""
    study_uid: str = ""
    sop_uid: str = ""


def read_image_header(path: str | os.PathLike) -> ImageHeader:
    """The :class:`ImageHeader` of a DICOM, PNG, JPEG, TIFF or BMP file (recognised by content, as
    :func:`read_image`). ImageReadError naming the file when it cannot be read."""
    kind = sniff_format(path)
    try:
        if kind == "pillow":
            return ImageHeader(read_pillow_header(Path(path)))
        meta, ids = read_dicom_header(Path(path), force=kind == "dicom-nopreamble")
        return ImageHeader(meta, ids["patient_id"], ids["study_uid"], ids["sop_uid"])
    except ImageReadError:
        raise
    except Exception as exc:  # the same safety net as read_image_with_meta
        raise ImageReadError(path, f"cannot read the image header ({short(exc)})") from None


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
