"""Grey content in a colour container: an RGB/RGBA/palette/CMYK/YCbCr file (or a DICOM RGB/YBR/PALETTE COLOR
image) whose channels agree on every pixel is a grey radiograph saved in a colour format, and is read as grayscale
without ``preprocessing.allow_color``. Most public chest X-ray collections hold such files.

The test: the largest difference between the channels of one pixel (max - min over R, G, B; alpha ignored), over
every pixel, must be at most :data:`GREY_TOLERANCE` of the full range (8 of 255 for 8-bit files). That leaves room
for the chroma noise a grey radiograph picks up on its way through lossy JPEG (0 for a grey image that libjpeg
encodes as RGB, CMYK or 4:2:0 YCbCr: its chroma is exactly neutral; at most 7 of 255 over the 421 NIH images saved
at quality 95 with +-3 independent channel noise, experiments/grey_content.py) while visible colour is above it:
a faint blue cast of +12 differs by 12, a sepia tint by up to 64, a colour map or a coloured marker by 255. One coloured pixel makes the image colour: a burned-in coloured marker
or overlay needs ``allow_color``, which converts it to luma.

The pixels of grey content are the same luma (ITU-R 601-2) ``allow_color`` gives, so an image that was readable
before reads to the same values (and the decode cache key, which holds the read options, stays valid).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

#: the largest per-pixel channel difference of grey content, as a fraction of the full range (8 / 255)
GREY_TOLERANCE = 8.0 / 255.0
#: Pillow modes that can be tested for grey content (converted to RGB, alpha dropped); others (LAB, HSV) are colour
PIL_CHECKABLE_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr")


def channel_spread(rgb: np.ndarray, full_scale: float) -> float:
    """The largest per-pixel difference between channels of ``rgb`` (H, W, C>=3; only the first 3 are used), as a
    fraction of ``full_scale`` (255 for 8-bit samples). 0.0 for an image whose channels are equal everywhere."""
    x = np.asarray(rgb)
    if x.ndim != 3 or x.shape[-1] < 3:
        raise ValueError(f"expected (H, W, 3) samples, got shape {x.shape}")
    x = x[..., :3]
    if x.dtype.kind in "ui":
        x = x.astype(np.int64, copy=False)
    spread = float((x.max(axis=-1) - x.min(axis=-1)).max()) if x.size else 0.0
    return spread / float(full_scale) if full_scale > 0 else float("inf")


def is_grey(spread: float) -> bool:
    """True when a :func:`channel_spread` is within :data:`GREY_TOLERANCE`."""
    return spread <= GREY_TOLERANCE + 1e-12


def pillow_spread(im: Any) -> Optional[float]:
    """:func:`channel_spread` of a Pillow image in a colour mode (decodes it); None for modes that cannot be tested
    (LAB, HSV, ...)."""
    if im.mode not in PIL_CHECKABLE_MODES:
        return None
    rgb = im.convert("RGB")  # palette -> its colours, CMYK/YCbCr -> RGB, alpha dropped
    return channel_spread(np.asarray(rgb), 255.0)


def describe_spread(spread: Optional[float]) -> str:
    """A phrase for error messages: how far the channels differ, against the tolerance."""
    if spread is None:
        return "a colour mode whose content cannot be tested for grey"
    return (
        f"colour content: channels differ by up to {spread * 100:.1f} % of the range on some pixel "
        f"(grey content allows {GREY_TOLERANCE * 100:.1f} %)"
    )
