"""Bounded reading (issue 18.10): a gzip manifest is inflated only up to a cap, a cell longer than the
cell cap is a one-line problem (not a _csv.Error traceback), and user text in plots is plain text."""

from __future__ import annotations

import gzip
import resource

import numpy as np
import pytest

from chestxr.cli import main
from chestxr.core import ManifestError
from chestxr.data import read_manifest, validate_manifest


def _bomb(path, inflated_mb: int) -> None:
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(b"path,patient_id,Opacity\n")
        row = b"a.png,P1,1\n" * 100_000
        for _ in range(inflated_mb * (1 << 20) // len(row)):
            fh.write(row)


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path, monkeypatch):
    path = tmp_path / "m.csv.gz"
    _bomb(path, 64)
    assert path.stat().st_size < 1 << 20  # well under 1 MB on disk
    monkeypatch.setenv("CHESTXR_MAX_MANIFEST_BYTES", str(8 << 20))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = validate_manifest(path, check_paths=False)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    msgs = [str(e) for e in result.errors]
    assert any("more than 8 MiB" in m and "CHESTXR_MAX_MANIFEST_BYTES" in m for m in msgs), msgs
    assert grown_mb < 40  # inflating the 64 MiB would have grown the peak by far more


def test_manifest_cap_is_overridable(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"")
    path = tmp_path / "m.csv.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"path,patient_id,Opacity\n" + b"".join(b"a%d.png,P%d,1\n" % (i, i) for i in range(2000)))
    monkeypatch.setenv("CHESTXR_MAX_MANIFEST_BYTES", "1000")
    assert validate_manifest(path, check_paths=False).errors
    monkeypatch.setenv("CHESTXR_MAX_MANIFEST_BYTES", str(1 << 20))
    assert not validate_manifest(path, check_paths=False).errors


@pytest.mark.parametrize("quoted", [True, False])
def test_long_cell_is_a_one_line_problem(tmp_path, quoted, capsys):
    long = "x" * (200 * 1024)
    cell = f'"{long}"' if quoted else long
    path = tmp_path / "m.csv"
    path.write_text(f"path,patient_id,Opacity\na.png,P1,1\nb.png,{cell},0\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(path, check_paths=False)
    text = str(info.value)
    assert "row 3" in text and "characters" in text and "CHESTXR_MAX_CELL_CHARS" in text
    assert main(["manifest", "validate", str(path), "--no-check-paths"]) != 0
    err = capsys.readouterr()
    assert "Traceback" not in err.err and "_csv.Error" not in err.err + err.out


def test_finding_names_with_mathtext_render_as_plain_text():
    from chestxr.evaluation import reliability_bins
    from chestxr.reporting import plot_finding_panels, plot_reliability_overview

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    name = r"$\frac{Effusion}{$x^$"  # unbalanced mathtext: crashed matplotlib's parser
    curve = reliability_bins(y, s, n_bins=5)
    uri = plot_finding_panels(finding=name, y_true=y, y_score=s, threshold=0.5, reliability=curve)
    assert uri.startswith("data:image/png;base64,")
    assert plot_reliability_overview({name: curve, "$$": curve}).startswith("data:image/png;base64,")
