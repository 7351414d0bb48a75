"""benchmarks/bench_pacs.py --smoke runs end to end (seconds): folder, DICOMweb and listen rows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("dicomweb_client")

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_pacs.py"


def test_bench_pacs_smoke(tmp_path, capsys):
    from orthanc import orthanc_missing

    spec = importlib.util.spec_from_file_location("bench_pacs", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "bench.json"
    result = module.main(["--smoke", "--threads", "1", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rows == result["rows"]
    expected = 1 if orthanc_missing() else 5
    assert len(rows) == expected and rows[0][0] == "folder (baseline)"
    for _name, n_studies, n_images, seconds, per_min in rows:
        assert n_studies >= 1 and n_images >= n_studies and seconds > 0
        assert per_min == pytest.approx(n_studies / seconds * 60, rel=0.05)
    assert "studies/min" in capsys.readouterr().out
