"""The inference log (chestxr.runs' JSON-lines log that predict and listen append): round trip, a crash
that tears the last line (by truncation and by a real kill -9), a writer restarted after it, damaged
lines, duplicates, entries of another model, and the refusal of anything but keyed hashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from chestxr.runs._inference_log import (
    LOG_FILE,
    InferenceLogWriter,
    LogEntry,
    LogError,
    LogHeader,
    read_inference_logs,
)

HEADER = LogHeader(
    ("A", "B"), model="a" * 64, thresholds="b" * 64, profile="c" * 64, sketch_dim=3, key_id="d" * 16, source="predict"
)
T0 = datetime(2025, 1, 6, 8, 0, tzinfo=timezone.utc)


def entry(i: int, **kw) -> LogEntry:
    base = dict(
        time=T0 + timedelta(minutes=i),
        image=f"{i:016x}",
        study=f"{i // 2:016x}",
        patient=f"{i // 4:016x}",
        fields={"Modality": "CR", "Manufacturer": None if i % 3 else "Acme"},
        numeric={"rows": 2048.0 + i},
        scores=[0.1 * (i % 10), 0.5],
        calls=[int(i % 10 >= 5), -1],
        sketch=[i, -i, 0.5],
    )
    base.update(kw)
    return LogEntry(**base)


def test_round_trip(tmp_path):
    with InferenceLogWriter(tmp_path / LOG_FILE, HEADER) as w:
        w.append([entry(i) for i in range(5)])
        w.append([entry(i) for i in range(5, 12)])
    log = read_inference_logs([tmp_path])
    assert len(log) == 12 and log.header == HEADER
    np.testing.assert_allclose(log.scores[:, 0], [0.1 * (i % 10) for i in range(12)])
    assert log.calls[:, 1].tolist() == [-1] * 12
    assert log.time[3] == np.datetime64("2025-01-06T08:03:00.000")
    assert log.fields["Manufacturer"].tolist()[:4] == ["Acme", None, None, "Acme"]
    np.testing.assert_allclose(log.numeric["rows"], 2048 + np.arange(12))
    np.testing.assert_allclose(log.sketch[2], [2, -2, 0.5])
    assert log.patient[5] == f"{1:016x}".encode() and not log.torn_lines and log.duplicates == 0
    assert log.image.dtype.kind == "S" and log.fields["Modality"].dtype == object  # columns, not objects per entry
    assert oct(os.stat(tmp_path / LOG_FILE).st_mode & 0o777) == "0o600"


def test_a_torn_last_line_is_skipped_and_a_restarted_writer_does_not_glue_onto_it(tmp_path):
    path = tmp_path / LOG_FILE
    with InferenceLogWriter(path, HEADER) as w:
        w.append([entry(i) for i in range(4)])
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # the crash: the fourth entry half written
    log = read_inference_logs([path])
    assert len(log) == 3 and log.torn_lines == (f"{path}:5",)
    with InferenceLogWriter(path, HEADER) as w:  # the restart appends after the torn line
        w.append([entry(i) for i in range(3, 6)])
    log = read_inference_logs([path])
    assert len(log) == 6 and log.torn_lines == (f"{path}:5",)
    assert all(json.loads(line) for line in path.read_text().splitlines()[5:])


def test_kill_9_while_appending_never_breaks_reading(tmp_path):
    path = tmp_path / LOG_FILE
    script = f"""
import sys
from datetime import datetime, timezone
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from chestxr.runs._inference_log import InferenceLogWriter, LogEntry, LogHeader
h = LogHeader(("A", "B"), "a" * 64, "b" * 64, None, 3, "d" * 16, "listen")
w = InferenceLogWriter({str(path)!r}, h)
i = 0
while True:
    w.append([LogEntry(datetime.now(timezone.utc), f"{{i + k:016x}}", "0" * 16, "1" * 16, {{"Modality": "CR"}}, {{}},
                       [0.5, 0.5], [1, 0], [0.0, 1.0, 2.0]) for k in range(50)])
    i += 50
    print(i, flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        reported = 0
        deadline = time.monotonic() + 60
        while reported < 200 and time.monotonic() < deadline:
            reported = int(proc.stdout.readline() or reported)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    log = read_inference_logs([path])
    assert reported >= 200 and len(log) >= reported  # every append reported done was on disk
    with InferenceLogWriter(path, log.header) as w:
        w.append([entry(10**6, scores=[0.1, 0.2], calls=[1, 0])])
    assert len(read_inference_logs([path])) == len(log) + 1


def test_a_damaged_line_in_the_middle_is_an_error_naming_it(tmp_path):
    path = tmp_path / LOG_FILE
    with InferenceLogWriter(path, HEADER) as w:
        w.append([entry(i) for i in range(3)])
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LogError, match=rf"{LOG_FILE}:3: not a JSON object"):
        read_inference_logs([path])
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[1]), "t": "2025-01-06 08:00", "image": "f" * 16})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LogError, match=rf"{LOG_FILE}:3: not a valid log entry"):
        read_inference_logs([path])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / LOG_FILE).write_text(lines[1] + "\n")
    with pytest.raises(LogError, match="before any header"):
        read_inference_logs([tmp_path / "x"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogError, match="no inference_log.jsonl"):
        read_inference_logs([tmp_path / "empty"])
    with pytest.raises(LogError, match="no such file"):
        read_inference_logs([tmp_path / "nothing"])


def test_duplicates_and_other_models_are_counted_not_mixed(tmp_path):
    with InferenceLogWriter(tmp_path / "a" / LOG_FILE, HEADER) as w:
        w.append([entry(i) for i in range(4)])
        w.append([entry(2), entry(3)])  # a study processed twice after a crash
    other = LogHeader(
        ("A", "B"), model="e" * 64, thresholds="b" * 64, profile=None, sketch_dim=3, key_id="d" * 16, source="listen"
    )
    with InferenceLogWriter(tmp_path / "b" / LOG_FILE, other) as w:
        w.append([entry(i) for i in range(100, 105)])
    log = read_inference_logs([tmp_path], header=HEADER)
    assert len(log) == 4 and log.duplicates == 2
    assert log.other_headers == {f"model {'e' * 12} / thresholds {'b' * 12} / profile none": 5}
    with pytest.raises(LogError, match="findings"):
        read_inference_logs([tmp_path / "a"], findings=["A", "C"])


def test_only_keyed_hashes_are_written(tmp_path):
    with InferenceLogWriter(tmp_path / LOG_FILE, HEADER) as w:
        with pytest.raises(ValueError, match="keyed hash"):
            w.append([entry(0, patient="PAT-000123")])
        with pytest.raises(ValueError, match="header says"):
            w.append([entry(0, scores=[0.1])])


def test_the_reader_is_columnar_and_keeps_every_hash_exact(tmp_path):
    """The reader holds numpy columns, not a Python object per entry: hashes as bytes (widened when a later
    entry has a longer one: 16 to 64 hex are allowed), one shared str per distinct field value, and enough
    rows allocated up front (the lines counted) that nothing is copied while reading."""
    from chestxr.runs._inference_log import _count_lines

    path = tmp_path / LOG_FILE
    with InferenceLogWriter(path, HEADER) as w:
        w.append([entry(i) for i in range(6000)])  # more than one 5,000-line chunk
        w.append([entry(10**5 + i, image=f"{i:064x}") for i in range(3)])  # wider hashes after narrower ones
    assert _count_lines(path) == 6004
    log = read_inference_logs([path])
    assert len(log) == 6003 and log.image.dtype == np.dtype("S64")
    assert log.image[0] == f"{0:016x}".encode() and log.image[-1] == f"{2:064x}".encode()
    assert log.study[-1] == f"{(10**5 + 2) // 2:016x}".encode()
    assert len({id(v) for v in log.fields["Modality"]}) == 1  # "CR" once, shared by every row
    assert log.scores.dtype == np.float64 and log.calls.dtype == np.int8 and log.scores.shape == (6003, 2)
    np.testing.assert_allclose(log.numeric["rows"][-1], 2048.0 + 10**5 + 2)
