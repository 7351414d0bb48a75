"""Text that chestxr puts into DICOM objects (SR content, heat-map Secondary Captures), valid for its VR.

Finding names, reviewer names and run-folder names are the user's text: they may hold non-ASCII letters
("Ödem", "Zoë", "李"), backslashes ("Pleural\\Effusion": the DICOM value delimiter, which would make one LO value
two), control characters (a newline) or more than 64 characters. So:

* :func:`lo` (LO, and SH-free single-line text such as an SR Code Meaning): control characters become spaces,
  a backslash becomes "/", runs of spaces collapse, and the value is cut (with "...") to at most 64 bytes of
  UTF-8, so it fits LO's 64 characters in any reading of the limit;
* :func:`text` (UT / ST / LT values: TEXT content items, ImageComments, DerivationDescription): control
  characters become spaces (one line), backslashes are kept (these VRs are single-valued), cut at ``limit``;
* :func:`set_character_set`: a dataset holding any non-ASCII text (these values, or the patient's name copied
  from the source image, whatever the source's own character set was) gets Specific Character Set
  ``ISO_IR 192`` (UTF-8), so it is written as UTF-8 and not as "?" replacement characters; a pure-ASCII dataset
  keeps the default repertoire (the widest compatibility).

tests/test_pacs_sr_text.py checks the result with dcmtk's dsrdump and dicom3tools' dciodvfy.
"""

from __future__ import annotations

import re
from typing import Any

#: C0 and C1 control characters and DEL
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACES = re.compile(r" {2,}")
UTF8 = "ISO_IR 192"


def _one_line(value: Any) -> str:
    return _SPACES.sub(" ", _CONTROL.sub(" ", str(value))).strip()


def _cut(value: str, max_bytes: int) -> str:
    """``value`` cut to at most ``max_bytes`` of UTF-8, never inside a character; "..." marks a cut."""
    if len(value.encode("utf-8")) <= max_bytes:
        return value
    out = value
    while out and len((out + "...").encode("utf-8")) > max_bytes:
        out = out[:-1]
    return out.rstrip() + "..."


def lo(value: Any, *, empty: str = "?") -> str:
    """``value`` as one LO value: one line, no backslash, at most 64 bytes of UTF-8; ``empty`` when nothing is left."""
    return _cut(_one_line(value).replace("\\", "/"), 64) or empty


def text(value: Any, *, limit: int = 1024) -> str:
    """``value`` as a UT/ST/LT value: one line, at most ``limit`` bytes of UTF-8 (ST: 1024, LT: 10240)."""
    return _cut(_one_line(value), limit)


def set_character_set(ds: Any) -> Any:
    """Give ``ds`` Specific Character Set ISO_IR 192 (UTF-8) when any of its text values (nested sequences
    included) is not ASCII; returns ``ds``."""
    if any(_non_ascii(elem.value) for elem in ds.iterall()):
        ds.SpecificCharacterSet = UTF8
    return ds


def _non_ascii(value: Any) -> bool:
    from pydicom.valuerep import PersonName

    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return any(_non_ascii(v) for v in value)
    if isinstance(value, PersonName):
        value = str(value)
    return isinstance(value, str) and not value.isascii()
