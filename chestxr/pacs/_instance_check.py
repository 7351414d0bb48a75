"""Can a received DICOM file be read back in full? The listener quarantines the ones that cannot.

A C-STORE data set is parsed lazily: pynetdicom and the journal copy its elements as raw bytes, so an
element whose value cannot be converted (a US of 3 bytes, a bad length in a nested item) is only found
when something reads it, typically the header checks, after the instance was acknowledged. Reading it
then fails on every try: :func:`reread_problem` finds such files once, before a study is predicted, and
says what is wrong by tag, VR and length only (never a value: values can be identifiers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def reread_problem(path: str | Path) -> Optional[str]:
    """None when pydicom parses ``path`` and converts every element (in every sequence item); else one
    line naming the first element it cannot convert (tag, keyword, VR, value length) or why the file
    does not parse. Pixel data are not decoded (a decode failure is listed by predict as unreadable
    pixels); shape: a file of any size is read once."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the answer, not an error
        return f"pydicom cannot parse the file ({type(exc).__name__})"
    for dataset in (ds.file_meta, ds):
        problem = _first_bad_element(dataset)
        if problem:
            return problem
    return None


def _first_bad_element(ds: Any) -> Optional[str]:
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        try:
            elem = ds[tag]
        except Exception as exc:  # noqa: BLE001
            vr = getattr(raw, "VR", None) or "??"
            length = getattr(raw, "length", None)
            keyword = _keyword(tag)
            return (
                f"element {_tag(tag)} {keyword} (VR {vr}, value length {length}) cannot be read ({type(exc).__name__})"
            )
        if elem.VR == "SQ":
            for item in elem.value:
                problem = _first_bad_element(item)
                if problem:
                    return problem
    return None


def _tag(tag: Any) -> str:
    return f"({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X})"


def _keyword(tag: Any) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or "private"
