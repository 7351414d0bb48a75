"""Finding the images to predict in a mix of files and folders, and the study each belongs to.

Folder rules (:func:`walk_inputs`):

- folders are searched recursively; symlinked folders are followed, each real folder once (a link
  loop or a second link to the same folder is walked only the first time);
- only regular files are opened: FIFOs, sockets and devices are skipped with the reason (a FIFO
  named ``b.dcm`` would block a reader forever), and a dangling symlink is reported by the link's own
  path;
- a file with an image suffix (.dcm .dicom .png .jpg .jpeg .tif .tiff .bmp) is an image; a file
  without a suffix is an image only if it starts like DICOM (128-byte preamble + ``DICM``); DICOMDIR
  media indexes, hidden files and other files (README, .txt, .csv, ...) are skipped with the reason.

Every skipped path comes back with its reason, so ``predict`` lists it in skipped.csv instead of
stopping or dropping it silently.

Study rule for files without a manifest (:func:`study_keys_for_files`): a DICOM's study is keyed by
(PatientID, StudyInstanceUID), both written only as keyed hashes (a random key per call: the keys
group images within one output and reveal nothing). A file with no study information (PNG/JPEG, or a
DICOM without StudyInstanceUID) is its own study: one study per image.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Sequence

from chestxr.core import CheckpointError, KeyedHasher

IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _is_dicomdir(path: Path) -> bool:
    if path.name.upper() == "DICOMDIR":
        return True
    if not _looks_like_dicom(path):
        return False
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["MediaStorageSOPClassUID"])
        return str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS
    except Exception:  # unreadable header: the reader will say what is wrong
        return False


def classify_file(path: Path) -> str | None:
    """None when ``path`` is an image to read, else the reason it is skipped."""
    try:
        st = os.stat(path)  # follows links
    except FileNotFoundError:
        if os.path.islink(path):
            return f"broken symbolic link (points to {os.readlink(path)}, which does not exist)"
        return "no such file"
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    if stat.S_ISFIFO(st.st_mode):
        return "not a regular file (a FIFO/named pipe)"
    if stat.S_ISSOCK(st.st_mode):
        return "not a regular file (a socket)"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "not a regular file (a device)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if path.name.startswith("."):
        return "hidden file"
    if _is_dicomdir(path):
        return "DICOMDIR (a media index, not an image)"
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return None
    if suffix == "" or not suffix[1:].isalpha():  # DICOM files often have no suffix (or 1.2.840... names)
        return None if _looks_like_dicom(path) else "not an image (no image suffix and not DICOM)"
    return f"not an image file (suffix {path.suffix})"


def walk_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(image files, sorted; skipped (path, reason)) from files and folders (rules in the module doc).

    Raises CheckpointError for an input that does not exist at all.
    """
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen_dirs: set[tuple[int, int]] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            _walk(p, files, skipped, seen_dirs)
        elif p.exists() or p.is_symlink():
            reason = classify_file(p)
            (skipped.append((p, reason)) if reason else files.append(p))
        else:
            raise CheckpointError(f"{p}: no such file or folder to predict")
    return sorted(set(files)), sorted(set(skipped))


def _walk(top: Path, files: list[Path], skipped: list[tuple[Path, str]], seen: set[tuple[int, int]]) -> None:
    st = os.stat(top)
    if (st.st_dev, st.st_ino) in seen:
        return
    seen.add((st.st_dev, st.st_ino))
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as exc:
        skipped.append((top, f"cannot list the folder ({exc.strerror})"))
        return
    for entry in entries:
        path = top / entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            if entry.is_symlink():
                target = os.stat(path)
                if (target.st_dev, target.st_ino) in seen:
                    skipped.append((path, "symbolic link to a folder already searched (loop or duplicate)"))
                    continue
            _walk(path, files, skipped, seen)
            continue
        reason = classify_file(path)
        (skipped.append((path, reason)) if reason else files.append(path))


def study_keys_for_files(files: Sequence[Path]) -> tuple[list[str], list[str]]:
    """(patient key, study key) per file, as keyed hashes (rule in the module doc)."""
    hasher = KeyedHasher()  # a fresh key per call: the keys group files, they identify nobody

    def tag(prefix: str, value: str) -> str:
        return f"{prefix}-" + hasher.digest(value, 12)

    patients, studies = [], []
    for path in files:
        pid, uid = "", ""
        if _looks_like_dicom(path) or path.suffix.lower() in (".dcm", ".dicom"):
            try:
                import pydicom

                ds = pydicom.dcmread(
                    str(path), stop_before_pixels=True, specific_tags=["PatientID", "StudyInstanceUID"]
                )
                pid = str(getattr(ds, "PatientID", "") or "").strip()
                uid = str(getattr(ds, "StudyInstanceUID", "") or "").strip()
            except Exception:  # unreadable header: its own study; the reader reports the file
                pass
        patients.append(tag("patient", pid) if pid else "")
        studies.append(tag("study", f"{pid}\x1f{uid}") if uid else "")  # "": its own study (one per image)
    return patients, studies
