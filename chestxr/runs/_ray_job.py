"""The output folder of ``chestxr predict --engine ray``: a job folder that a rerun resumes.

    OUT/
      job.json                 what the job is and where it stands: status (running / complete / stopped:
                               images not readable), run, model and thresholds sha256, counts, versions, times
      store/                   the keyed result store (chestxr/runs/_result_store.py): every image scored so
                               far by this model at these thresholds, in atomically written Parquet parts
      predictions.csv          \\
      study_predictions.csv     | the files plain ``chestxr predict`` writes, by the same code
      review.html               | (review.html without thumbnails or Grad-CAM: the driver never reads images)
      skipped.csv              /
      predictions/part-NNNNN.parquet   predictions.csv as Parquet, PARQUET_ROWS rows per file

Rules: a folder that is neither empty nor a job folder is refused unless ``--overwrite`` (which empties it);
a run folder is always refused. A job folder is resumed without ``--overwrite`` (the store only ever holds
finished results, keyed by image + model + thresholds, so reusing it is always correct); ``--overwrite``
keeps the store too. One job at a time: an fcntl lock on ``OUT/.lock`` (a second job stops at once with one
line). The final files are built in ``OUT/.final-tmp-*`` and moved into place one by one (each rename
atomic), job.json last; ``status: complete`` says they all belong to this job.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from chestxr.core import OutputExistsError, OutputWriteError, make_temp_dir, write_json_atomic
from chestxr.runs._folder import is_run_folder

JOB_FILE = "job.json"
STORE = "store"
PARQUET_DIR = "predictions"
PARQUET_ROWS = 100_000
FINAL_FILES = ("predictions.csv", "study_predictions.csv", "review.html", "skipped.csv", PARQUET_DIR)
_LOCK = ".lock"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_job(out: str | Path) -> dict[str, Any] | None:
    """OUT/job.json when OUT is a ray job folder, else None."""
    try:
        doc = json.loads((Path(out) / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("engine") == "ray" else None


class JobFolder:
    """An open job folder (see the module doc); use :meth:`open`."""

    def __init__(self, out: Path, doc: dict[str, Any]) -> None:
        self.out = out
        self.doc = doc

    @property
    def store(self) -> Path:
        return self.out / STORE

    @classmethod
    @contextmanager
    def open(cls, out: str | Path, *, overwrite: bool, **facts: Any) -> Iterator[JobFolder]:
        """Check, lock and mark ``out`` as running; ``facts`` go into job.json."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise OutputExistsError(f"{out} exists and is not a folder; choose another --out")
        if out.is_dir() and is_run_folder(out):
            raise OutputExistsError(
                f"{out} is a chestxr run folder (holds model.json); choose another --out, e.g. {out}/predict"
            )
        previous = read_job(out) if out.is_dir() else None
        if out.is_dir() and previous is None and any(out.iterdir()):
            if not overwrite:
                raise OutputExistsError(
                    f"{out} already holds results that are not a `predict --engine ray` job; pass --overwrite to "
                    "replace them or choose another --out"
                )
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        try:
            out.mkdir(parents=True, exist_ok=True)
            fd = os.open(out / _LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputWriteError(f"{out}: cannot write the output folder ({exc.strerror})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputExistsError(
                    f"{out}: another `chestxr predict --engine ray` is writing to this folder; wait for it or "
                    "choose another --out"
                ) from None
            doc = {
                "engine": "ray",
                "status": "running",
                "started_utc": _now(),
                "resumed_from": previous.get("status") if previous else None,
                **facts,
            }
            job = cls(out, doc)
            job.save()
            yield job
        finally:
            os.close(fd)  # releases the lock

    def save(self) -> None:
        write_json_atomic(self.out / JOB_FILE, self.doc)

    @contextmanager
    def final(self) -> Iterator[Path]:
        """A staging folder for the final files; on success they replace OUT's (and stale ones go)."""
        staged = make_temp_dir(self.out, prefix=".final-tmp-")
        try:
            yield staged
            for name in FINAL_FILES:
                new, old = staged / name, self.out / name
                if old.is_dir() and not old.is_symlink():
                    aside = make_temp_dir(self.out, prefix=".old-")
                    os.replace(old, aside / name)
                    shutil.rmtree(aside, ignore_errors=True)
                if new.exists():
                    os.replace(new, old)
                elif old.exists():
                    old.unlink()  # e.g. a skipped.csv of an earlier run that had unreadable images
        finally:
            shutil.rmtree(staged, ignore_errors=True)


_NUMERIC_PREFIXES = ("prob_", "margin_", "logit_margin_", "predicted_score")


def csv_as_parquet(csv_path: Path, folder: Path, *, rows: int = PARQUET_ROWS) -> list[Path]:
    """The table of ``csv_path`` (a predictions.csv chestxr wrote) as Parquet parts in ``folder``: text columns
    as strings with the CSV formula escaping undone (Parquet cells are data, not spreadsheet input), the
    probability and margin columns as float64."""
    import pandas as pd

    from chestxr.core import unescape_cell

    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    frame.columns = [unescape_cell(c) for c in frame.columns]
    for col in frame.columns:
        if col.startswith(_NUMERIC_PREFIXES):
            frame[col] = pd.to_numeric(frame[col].replace("", "nan"), errors="coerce").astype("float64")
        else:
            frame[col] = frame[col].map(unescape_cell)
    return write_parquet_parts(frame, folder, rows=rows)


def write_parquet_parts(frame: Any, folder: Path, *, rows: int = PARQUET_ROWS) -> list[Path]:
    """``frame`` as ``folder/part-NNNNN.parquet`` files of at most ``rows`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, start in enumerate(range(0, max(len(frame), 1), rows)):
        part = frame.iloc[start : start + rows]
        path = folder / f"part-{k:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), path)
        written.append(path)
    return written
