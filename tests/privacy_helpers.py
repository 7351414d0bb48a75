"""Marker identifiers put into DICOM headers, and the search for them in every output (privacy tests of
tests/runs/ and tests/pacs/)."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom

MARKERS = {
    "PatientName": "ZZPRIVATEZZ^NAME",
    "PatientBirthDate": "19000101",
    "PatientID": "ZZPIDZZ",
    "AccessionNumber": "ZZACCZZ",
    "InstitutionName": "ZZINSTZZ",
    "ReferringPhysicianName": "ZZDOCZZ",
    "OtherPatientIDs": "ZZOTHERZZ",
    "StudyID": "ZZSTUDYIDZZ",
}
NEEDLES = [b"ZZPRIVATEZZ", b"19000101", b"ZZPIDZZ", b"ZZACCZZ", b"ZZINSTZZ", b"ZZDOCZZ", b"ZZOTHERZZ", b"ZZSTUDYIDZZ"]


def mark_dicoms(folder: Path) -> int:
    """Put the marker identifiers into every DICOM under ``folder``; returns how many were changed."""
    n = 0
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in MARKERS.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
        n += 1
    return n


def leaks(root: Path) -> list[str]:
    """Every file or folder under ``root`` whose name or content holds a marker."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if any(m.decode() in name for m in NEEDLES):
                found.append(f"name: {p}")
            if p.is_file():
                data = p.read_bytes()
                found += [f"{m.decode()} in {p}" for m in NEEDLES if m in data]
    return found
