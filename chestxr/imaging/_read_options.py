"""``ReadOptions``: how chestxr turns an image file into pixels and which DICOM headers it accepts.

Built from the config's ``preprocessing`` section (:meth:`ReadOptions.from_config`); used by the readers
(chestxr/imaging/_readers.py, dicom_pixels.py, raster.py) and as part of the image cache's key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from chestxr.core import ConfigError

DEFAULT_MAX_PIXELS = 100_000_000
VOI_MODES = ("auto", "ignore", "window")


@dataclass(frozen=True)
class ReadOptions:
    """How to turn a file into pixels, and which DICOM headers to accept.

    voi: "auto" | "ignore" | "window" (then ``window`` = (center, width) in Modality-LUT units).
    allow_color: convert colour images (DICOM RGB/YBR/PALETTE COLOR; PNG/JPEG/TIFF/BMP RGB, RGBA,
    CMYK, YCbCr, colour palettes) to gray instead of refusing them (grey content in those formats,
    chestxr/imaging/_grey_content.py, is read as gray without it). modalities / body_parts / view_positions: None (accept all) or the allowed
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
        """Options from a :class:`chestxr.core.PreprocessConfig`."""
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
