"""Atomic writes, JSON conversion, output-folder protection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from chestxr.core import OutputExistsError, prepare_output_dir, write_json_atomic, write_with_atomic
from chestxr.runs import legacy_patient_hashes


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def boom(tmp):
        with open(tmp, "w") as fh:
            fh.write("partial")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        write_with_atomic(p, boom)
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]  # no temp file left behind


def test_json_handles_numpy_and_nan(tmp_path):
    p = tmp_path / "m.json"
    write_json_atomic(p, {"a": np.float32(0.5), "b": np.array([1, 2]), "c": math.nan, "d": (1, 2)})
    assert json.loads(p.read_text()) == {"a": 0.5, "b": [1, 2], "c": None, "d": [1, 2]}


def test_output_folder_not_overwritten(tmp_path):
    out = tmp_path / "out"
    prepare_output_dir(out, overwrite=False)
    (out / "report.html").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare_output_dir(out, overwrite=False)
    prepare_output_dir(out, overwrite=True)


def test_hash_strings_one_way_and_stable():
    h = legacy_patient_hashes(["P001", "P002"])  # the pre-0.2 fixed-salt hashes, kept to check old runs
    assert h == legacy_patient_hashes(["P001", "P002"])
    assert len(set(h)) == 2 and all("P00" not in x for x in h)
