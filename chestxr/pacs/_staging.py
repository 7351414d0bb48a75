"""Received or retrieved DICOM instances on disk, under names that carry no identifier.

Layout (shared by ``predict --dicomweb`` and ``listen``, so both produce what ``predict FOLDER`` does)::

    <root>/<study key>/<instance key>.dcm

named by :class:`Keyer` (keyed hashes of (PatientID, StudyInstanceUID) and of the SOPInstanceUID), so an
image_id in predictions.csv is ``<study key>/<instance key>.dcm``. UIDs, names and IDs stay inside the
files; chestxr's own files only ever see these keys.

:func:`screen_study` sorts one study's files into images the run will read and skipped ones (not an image
SOP class, or refused by the run's header checks: modality / body part / view), with a reason each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from chestxr.core import HeaderCheckError, KeyedHasher, write_bytes_atomic

#: Image storage SOP classes chestxr reads (CR, DX for presentation / for processing).
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}


class Keyer:
    """Names of studies and instances on disk: keyed hashes (:class:`chestxr.core.KeyedHasher`, HMAC-SHA256
    under a secret 256-bit key).

    study: ``study-<12 hex>`` of (PatientID, StudyInstanceUID), the rule predict uses for DICOM folders;
    instance: 16 hex of the SOPInstanceUID. Without the key, a name reveals nothing (a guessed UID cannot
    be checked). ``predict --dicomweb`` uses a fresh key per call; the listener keeps one in its journal
    (``key``, mode 0600) so names survive restarts.
    """

    def __init__(self, key: Optional[bytes] = None) -> None:
        self.hasher = KeyedHasher(key)

    @classmethod
    def persistent(cls, folder: str | Path) -> "Keyer":
        """The key stored in ``folder/key`` (created, mode 0600, on first use)."""
        hasher = KeyedHasher.from_file(Path(folder) / "key", create=True)
        assert hasher is not None
        return cls(hasher.key)

    def _tag(self, value: str) -> str:
        return self.hasher.digest(value)

    def study(self, ds: Any) -> str:
        """The study key of a dataset (its PatientID and StudyInstanceUID)."""
        pid = str(ds.get("PatientID", "") or "").strip()
        return "study-" + self._tag(f"{pid}\x1f{str(ds.StudyInstanceUID).strip()}")[:12]

    def instance(self, sop_instance_uid: str) -> str:
        return self._tag(f"sop\x1f{sop_instance_uid}")[:16]

    def path(self, root: str | Path, ds: Any) -> Path:
        """Where ``ds`` lives under ``root``: ``<study key>/<instance key>.dcm``."""
        return Path(root) / self.study(ds) / f"{self.instance(str(ds.SOPInstanceUID))}.dcm"


def dataset_bytes(ds: Any) -> bytes:
    """A pydicom Dataset as a DICOM Part 10 file (preamble, file meta) in bytes."""
    from io import BytesIO

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    meta = ds.file_meta
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_instance(root: str | Path, ds: Any, keyer: Keyer) -> Path:
    """Write ``ds`` atomically (temp + fsync + rename) to its place under ``root``; returns the path."""
    path = keyer.path(root, ds)
    write_bytes_atomic(path, dataset_bytes(ds))
    return path


@dataclass
class ScreenedStudy:
    """One study folder after :func:`screen_study`: ``images`` to predict, ``skipped`` (path, reason)."""

    folder: Path
    images: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def screen_study(folder: str | Path, options: Optional[Any] = None) -> ScreenedStudy:
    """Sort ``folder``'s ``*.dcm`` into readable images and skipped files.

    options: a :class:`chestxr.imaging.ReadOptions` (the run's header checks) or None (no checks).
    A file is skipped when its header cannot be parsed, its SOP class is not CR/DX image storage (an SR,
    presentation state, secondary capture...), or the header checks refuse it (e.g. a lateral view).
    """
    import pydicom

    from chestxr.imaging import check_dicom_header

    out = ScreenedStudy(Path(folder))
    for path in sorted(Path(folder).glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # a truncated or foreign file: list it, keep going
            out.skipped.append((path, f"cannot parse the DICOM header ({type(exc).__name__}); send it again"))
            continue
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class not in IMAGE_SOP_CLASSES:
            name = getattr(pydicom.uid.UID(sop_class), "name", sop_class) if sop_class else "missing"
            out.skipped.append((path, f"not a CR/DX image (SOP class {name}, modality {ds.get('Modality', '?')})"))
            continue
        if options is not None:
            try:
                check_dicom_header(path, ds, options)
            except HeaderCheckError as exc:
                out.skipped.append((path, exc.reason))
                continue
            except Exception as exc:  # an element pydicom cannot convert (e.g. a US of 3 bytes): list it
                out.skipped.append((path, f"cannot read the DICOM header ({type(exc).__name__}); send it again"))
                continue
        out.images.append(path)
    return out


#: Type 2 attributes of the Patient and General Study modules: present in a valid image, possibly empty.
PATIENT_STUDY_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def read_evidence(paths: list[Path]) -> list[Any]:
    """Headers (no pixels) of ``paths``, for an SR's evidence and references (patient, study, UIDs).
    Type 2 patient/study attributes an image lacks are added empty (DICOM's "unknown"), never invented."""
    import pydicom

    out = []
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        for keyword in PATIENT_STUDY_TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
        out.append(ds)
    return out
