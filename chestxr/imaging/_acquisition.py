"""Acquisition fields for monitoring: the non-identifying technical facts of how an image was made, from
the reader's DICOM metadata, banded where a raw value would be too fine. A PNG/JPEG export has no
header: its TransferSyntax reads "PNG file" (so a switch from DICOM to exports shows) and the rest is
missing.

The fields (:data:`ACQUISITION_FIELDS`): Modality, Manufacturer, ManufacturerModelName,
SoftwareVersions, ViewPosition, PhotometricInterpretation, BitsStored, PixelSpacingBand,
TransferSyntax, KVPBand, AgeBand and Sex. Bands: pixel spacing (mm, the first value of PixelSpacing,
else ImagerPixelSpacing) :data:`SPACING_BANDS`; KVP (kV) :data:`KVP_BANDS`; age (years, from a
manifest's ``age`` or the DICOM PatientAge "061Y"; months/weeks/days count as 0 years)
:data:`AGE_BANDS` (as the evaluation report's subgroups); sex M / F / O. A missing value is None
(the monitor counts it as its own category). Never a UID, a name, a date, an ID or free text other
than the manufacturer's own product strings.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Optional

ACQUISITION_FIELDS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "ViewPosition",
    "PhotometricInterpretation",
    "BitsStored",
    "PixelSpacingBand",
    "TransferSyntax",
    "KVPBand",
    "AgeBand",
    "Sex",
)
SPACING_BANDS = (
    (0.0, 0.1, "<0.10 mm"),
    (0.1, 0.15, "0.10-0.15 mm"),
    (0.15, 0.2, "0.15-0.20 mm"),
    (0.2, 0.3, "0.20-0.30 mm"),
    (0.3, math.inf, ">=0.30 mm"),
)
KVP_BANDS = (
    (0.0, 70.0, "<70 kV"),
    (70.0, 90.0, "70-89 kV"),
    (90.0, 110.0, "90-109 kV"),
    (110.0, 130.0, "110-129 kV"),
    (130.0, math.inf, ">=130 kV"),
)
AGE_BANDS = ((0, 18, "0-17"), (18, 40, "18-39"), (40, 60, "40-59"), (60, 80, "60-79"), (80, math.inf, "80+"))
#: a manufacturer's string longer than this is cut (free text has no place in a profile)
MAX_TEXT = 96
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)


def _band(value: Optional[float], bands: tuple[tuple[float, float, str], ...]) -> Optional[str]:
    if value is None or not math.isfinite(value) or value < 0:
        return None
    for lo, hi, name in bands:
        if lo <= value < hi:
            return name
    return None


def pixel_spacing_band(mm: Optional[float]) -> Optional[str]:
    return _band(mm, SPACING_BANDS)


def kvp_band(kv: Optional[float]) -> Optional[str]:
    return _band(kv, KVP_BANDS)


def age_years(value: Any) -> Optional[float]:
    """Years from a number, "61", "061Y" (DICOM AS; D/W/M are under a year: 0); None when unreadable."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and 0 <= value < 150 else None
    m = _AGE.match(str(value))
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2).upper()
    return float(n) if unit in ("", "Y") and n < 150 else (0.0 if unit in ("D", "W", "M") else None)


def age_band(value: Any) -> Optional[str]:
    years = age_years(value)
    return None if years is None else _band(years, AGE_BANDS)


def sex_code(value: Any) -> Optional[str]:
    """M / F / O from DICOM PatientSex or a manifest's sex column (male/female/other spelled out too)."""
    if value is None:
        return None
    v = str(value).strip().upper()
    if not v:
        return None
    return {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}.get(v, "O")


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = "\\".join(str(v).strip() for v in value)
    v = " ".join(str(value).split())
    return v[:MAX_TEXT] or None


def _number(value: Any) -> Optional[float]:
    try:
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        v = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return v if v is not None and math.isfinite(v) else None


def acquisition_meta(ds: Any) -> dict[str, Any]:
    """The reader metadata keys for monitoring from a pydicom dataset: ``manufacturer``,
    ``manufacturer_model``, ``software_versions`` (text, multi-values joined by backslash),
    ``pixel_spacing`` (mm: PixelSpacing, else ImagerPixelSpacing, first value), ``kvp`` (kV), ``age_band``
    and ``sex`` (banded here: the exact age never leaves the header)."""

    def get(keyword: str) -> Any:
        try:
            value = ds.get(keyword)
        except Exception:  # a malformed element: treated as absent
            return None
        return None if value is None or value == "" else value

    def listed(value: Any) -> Any:
        return (
            list(value)
            if value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__iter__")
            else value
        )

    spacing = _number(listed(get("PixelSpacing"))) or _number(listed(get("ImagerPixelSpacing")))
    return {
        "manufacturer": _text(get("Manufacturer")),
        "manufacturer_model": _text(get("ManufacturerModelName")),
        "software_versions": _text(listed(get("SoftwareVersions"))),
        "pixel_spacing": spacing,
        "kvp": _number(get("KVP")),
        "age_band": age_band(get("PatientAge")),
        "sex": sex_code(get("PatientSex")),
    }


def _given(value: Any) -> bool:
    return value is not None and value != "" and not (isinstance(value, float) and math.isnan(value))


def acquisition_fields(meta: Mapping[str, Any], *, age: Any = None, sex: Any = None) -> dict[str, Optional[str]]:
    """The fields of :data:`ACQUISITION_FIELDS` from a reader metadata dict (``read_image_with_meta`` /
    ``read_image_header``). ``age`` / ``sex`` (a manifest's columns) take precedence over the header's."""
    bits = meta.get("bits_stored")
    return {
        "Modality": _text(meta.get("modality")),
        "Manufacturer": _text(meta.get("manufacturer")),
        "ManufacturerModelName": _text(meta.get("manufacturer_model")),
        "SoftwareVersions": _text(meta.get("software_versions")),
        "ViewPosition": _text(meta.get("view_position")),
        "PhotometricInterpretation": _text(meta.get("photometric")),
        "BitsStored": None if bits in (None, "") else str(bits),
        "PixelSpacingBand": pixel_spacing_band(_number(meta.get("pixel_spacing"))),
        "TransferSyntax": _text(meta.get("transfer_syntax"))
        or (None if meta.get("format") in (None, "DICOM") else f"{meta.get('format')} file"),
        "KVPBand": kvp_band(_number(meta.get("kvp"))),
        "AgeBand": age_band(age) if _given(age) else meta.get("age_band"),
        "Sex": sex_code(sex) if _given(sex) else meta.get("sex"),
    }
