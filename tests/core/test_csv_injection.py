"""Every CSV chestxr writes neutralises spreadsheet formulas (OWASP CSV injection), and manifests written
by chestxr read back unchanged."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

HOSTILE = [
    "=cmd|' /C calc'!A0",
    "+1+cmd",
    "-2+3",
    "@SUM(1+1)*cmd",
    '=HYPERLINK("http://x.invalid","click")',
    "\tTAB",
    "\rCR",
    "'=already",
    "''+twice",
]
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def assert_no_formula_cells(path: Path) -> list[list[str]]:
    """Every cell of the CSV at ``path`` is safe to open in a spreadsheet; returns the rows."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                assert NUMBER.match(cell), f"{path.name} row {r} column {c}: formula cell {cell!r}"
    return rows


def test_escape_round_trips_and_leaves_numbers():
    from chestxr.core import escape_cell, needs_escape, unescape_cell

    for value in [*HOSTILE, "plain", "", "'quoted", "a=b", "-1", "-0.25", "+3e-5", "1e-4"]:
        escaped = escape_cell(value)
        assert unescape_cell(escaped) == value
        assert escaped[:1] not in ("=", "+", "-", "@", "\t", "\r") or NUMBER.match(escaped)
    assert escape_cell("=x") == "'=x" and escape_cell("'=x") == "''=x" and escape_cell("-1") == "-1"
    assert not needs_escape("'plain") and escape_cell(3.0) == 3.0


def _review_frame(ids):
    n = len(ids)
    return pd.DataFrame(
        {
            "image_id": ids,
            "path": [f"{i}.png" for i in ids],
            "patient_id": ids,
            "study_id": ids,
            "prob_Effusion": np.linspace(0.1, 0.9, n),
        }
    )


def test_predictions_and_study_predictions_csv(tmp_path):
    from chestxr.reporting import write_review_report

    paths = write_review_report(
        tmp_path, findings=["Effusion"], predictions=_review_frame(HOSTILE), thresholds=np.array([0.5])
    )
    for key in ("predictions_csv", "study_predictions_csv"):
        rows = assert_no_formula_cells(paths[key])
        cells = {c for row in rows for c in row}
        assert "'=cmd|' /C calc'!A0" in cells and "''=already" in cells
    # margins are negative numbers and stay numbers
    table = pd.read_csv(paths["predictions_csv"])
    assert (table["margin_Effusion"] < 0).any() and pd.api.types.is_float_dtype(table["margin_Effusion"])
    assert "<td>=cmd" not in (tmp_path / "review.html").read_text()  # the HTML shows it escaped as text


def test_evaluation_metrics_and_predictions_csv(tmp_path):
    from chestxr.evaluation import evaluate_predictions
    from chestxr.reporting import write_evaluation_report

    rng = np.random.default_rng(0)
    n, findings = 40, ["=Finding", "Nodule"]
    y = (rng.random((n, 2)) < 0.4).astype(float)
    s = np.clip(0.4 * y + 0.6 * rng.random((n, 2)), 0, 1)
    mask = np.ones((n, 2), bool)
    ids = [HOSTILE[i % len(HOSTILE)] + str(i) for i in range(n)]
    groups = np.array(ids, dtype=object)
    frame = _review_frame(ids).drop(columns=["prob_Effusion"])
    thr = np.array([0.5, 0.5])
    evaluation = evaluate_predictions(y, s, mask, thr, findings, groups=groups, n_boot=20, level=0.95, seed=0)
    paths = write_evaluation_report(
        tmp_path, findings=findings, predictions=frame, y_true=y, mask=mask, y_score=s, thresholds=thr,
        groups=groups, evaluation=evaluation,
    )  # fmt: skip
    rows = assert_no_formula_cells(paths["metrics_csv"])
    assert any("'=Finding" in row for row in rows)
    rows = assert_no_formula_cells(paths["predictions_csv"])
    assert any(cell.startswith("'=cmd") for row in rows for cell in row)


def test_manifest_written_escaped_reads_back_unchanged(tmp_path):
    from chestxr.data import read_manifest, write_manifest

    hostile = [h for h in HOSTILE if "\r" not in h] + ["=x"]  # the reader reads CR as a line end, escaped or not

    images = tmp_path / "images"
    images.mkdir()
    frame = pd.DataFrame(
        {
            "path": [str(images / f"{i}.png") for i in range(len(hostile))],
            "patient_id": hostile,
            "study_id": [h + "_s" for h in hostile],
            "site": hostile[::-1],
            "=Finding": [1.0, 0.0, -1.0, np.nan, 1.0, 0.0, 0.0, 1.0, 0.5],
        }
    )
    for i in range(len(hostile)):
        (images / f"{i}.png").write_bytes(b"")
    out = write_manifest(frame, tmp_path / "m.csv")
    rows = assert_no_formula_cells(out)
    assert rows[0][-1] == "'=Finding"
    back = read_manifest(out, check_paths=False)
    assert back.findings == ["=Finding"]
    assert back.frame["patient_id"].tolist() == hostile
    assert back.frame["study_id"].tolist() == [h + "_s" for h in hostile]
    assert back.frame["site"].astype(str).tolist() == hostile[::-1]
    np.testing.assert_array_equal(back.labels()[:, 0], frame["=Finding"].to_numpy())


def test_training_metrics_and_skipped_csv(tmp_path):
    from types import SimpleNamespace

    from chestxr.runs import write_metrics_csv, write_skipped

    write_metrics_csv(tmp_path / "metrics.csv", [{"epoch": 1, "val_auroc_=x": 0.5, "train_loss": -0.1}])
    rows = assert_no_formula_cells(tmp_path / "metrics.csv")
    assert rows[0] == ["epoch", "val_auroc_=x", "train_loss"] and rows[1] == ["1", "0.5", "-0.1"]
    sets = SimpleNamespace(paths=["=cmd.png", "+x.png"])
    write_skipped(tmp_path, sets, sets, {("train", 0): "-bad", ("val", 1): "@reason"})
    rows = assert_no_formula_cells(tmp_path / "skipped.csv")
    assert rows[1] == ["train", "'=cmd.png", "'-bad"]


def test_every_csv_writer_in_the_package_goes_through_csvsafe():
    """A guard for CSVs added later: each DataFrame.to_csv call escapes its frame (escape_frame) and each
    csv.writer's rows go through escape_row, so no chestxr CSV can carry a formula."""
    import chestxr

    root = Path(chestxr.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "csvsafe.py":
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines, 1):
            call = line + (lines[i] if i < len(lines) else "")  # the call may continue on the next line
            if ".to_csv(" in line and "escape_frame(" not in call:
                offenders.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
            if "writerow(" in line and "escape_row(" not in call:
                offenders.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert not offenders, "CSV cells written without chestxr/core/_csvsafe.py:\n" + "\n".join(offenders)
